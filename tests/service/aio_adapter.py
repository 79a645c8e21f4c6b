"""Run a grpc.aio servicer under ``grpc_testing``, which only drives sync servicers.

``grpc_testing`` (grpcio-testing) calls each handler synchronously, in a thread of
its own, with a sync ``grpc.ServicerContext``; it has no support for ``grpc.aio``
servicers (https://github.com/grpc/grpc/issues/24942). This module bridges the two:

* :class:`LoopThread` runs one asyncio event loop forever in a background thread.
  Everything async that belongs to one balancer (its store's ``asyncio.Event`` s,
  the servicer's shutdown event, every RPC coroutine) must run on that one loop.
* :class:`AioServicerAdapter` is a sync servicer with one method per RPC of a
  service descriptor. A unary handler runs the real coroutine on the loop with
  ``asyncio.run_coroutine_threadsafe(...).result()``; the server-streaming handler
  is a generator that pulls the real async generator one item at a time the same
  way, stops once the ``grpc_testing`` RPC is no longer active, and closes the
  async generator when done.
* :class:`AioContext` is what the async servicer sees as its context. Its
  ``async abort(code, details, trailing_metadata)`` ends the RPC with that status.

One deliberate difference from "call ``context.abort``": ``grpc_testing``'s sync
``ServicerContext.abort(code, details)`` terminates the RPC with *empty* trailing
metadata, discarding anything set with ``set_trailing_metadata`` (and logs an
"Exception calling application!" traceback). A real server sends the trailing
metadata with the abort status, and this service puts its google.rpc.Status
(``grpc-status-details-bin``) there, so ``AioContext.abort`` instead records the
status with ``set_trailing_metadata``/``set_code``/``set_details`` and raises
:class:`RpcAborted`; the sync handler catches it and returns normally, and
``grpc_testing`` then terminates the RPC with the recorded code, details and
trailing metadata, exactly what a real server would send.

Only unary-request methods are supported (the lb.v1 service has no client streaming).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor

_T = TypeVar("_T")

#: Longest wait for any one step on the loop. Only a guard against a hung test: a step
#: that takes longer fails the RPC (UNKNOWN) instead of blocking the suite forever.
HANG_GUARD_S = 10.0

Metadata = Sequence[tuple[str, str | bytes]]


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str = "aio-adapter-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule ``coro`` on the loop and return its thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = HANG_GUARD_S) -> _T:
        """Run ``coro`` on the loop and return its result (or raise its exception)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def call(self, function: Callable[[], _T], timeout: float = HANG_GUARD_S) -> _T:
        """Call a plain function on the loop thread (for loop-bound, non-thread-safe APIs)."""

        async def call() -> _T:
            return function()

        return self.run(call(), timeout)

    def close(self, timeout: float = HANG_GUARD_S) -> None:
        """Cancel whatever still runs on the loop, stop it, join the thread, close the loop."""
        if self.loop.is_closed():
            return

        async def cancel_leftovers() -> None:
            current = asyncio.current_task()
            leftovers = [task for task in asyncio.all_tasks() if task is not current]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            self.run(cancel_leftovers(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.loop.close()


class RpcAborted(Exception):
    """Raised by :meth:`AioContext.abort` once the status is recorded; ends the handler."""


class AioContext:
    """The ``grpc.aio.ServicerContext`` face of a ``grpc_testing`` sync context.

    ``abort`` and ``send_initial_metadata`` are coroutines, as in grpc.aio; every other
    attribute (``set_trailing_metadata``, ``set_code``, ``invocation_metadata``,
    ``time_remaining``, ...) is the sync context's own.
    """

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        """End the RPC with ``code``, ``details`` and ``trailing_metadata``; always raises.

        As in grpc.aio, empty ``trailing_metadata`` keeps whatever was set before.
        """
        if trailing_metadata:
            self._context.set_trailing_metadata(tuple(trailing_metadata))
        self._context.set_code(code)
        self._context.set_details(details)
        raise RpcAborted(f"{code.name}: {details}")

    async def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        """Send the initial metadata now."""
        self._context.send_initial_metadata(tuple(initial_metadata))

    def cancelled(self) -> bool:
        """Whether the RPC ended before the handler finished (client cancel or deadline)."""
        return not self._context.is_active()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


UnaryHandler = Callable[[Any, grpc.ServicerContext], Any]
StreamHandler = Callable[[Any, grpc.ServicerContext], Iterator[Any]]


class AioServicerAdapter:
    """A sync servicer for ``grpc_testing`` that forwards every RPC to an async servicer.

    Build it with the async servicer, the :class:`LoopThread` the servicer's state
    lives on, and the service descriptor; it then has one attribute per RPC, named
    as in the descriptor, so ``grpc_testing.server_from_dictionary({descriptor:
    adapter}, ...)`` finds them. ``in_flight`` counts handlers still running, and
    :meth:`wait_idle` waits for them to finish (e.g. after cancelling a stream).
    """

    def __init__(self, servicer: object, loop: LoopThread, service: ServiceDescriptor) -> None:
        self._loop = loop
        self._idle = threading.Condition()
        self._in_flight = 0
        for method in service.methods:
            if method.client_streaming:
                raise NotImplementedError(f"{method.full_name}: client streaming is unsupported")
            implementation = getattr(servicer, method.name)
            handler = (
                self._stream_handler(implementation)
                if method.server_streaming
                else self._unary_handler(implementation)
            )
            setattr(self, method.name, handler)

    @property
    def in_flight(self) -> int:
        """How many handlers are running now."""
        with self._idle:
            return self._in_flight

    def wait_idle(self, timeout: float = HANG_GUARD_S) -> bool:
        """Wait until no handler is running; False if that took longer than ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _unary_handler(
        self, implementation: Callable[[Any, AioContext], Coroutine[Any, Any, Any]]
    ) -> UnaryHandler:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self._tracked():
                try:
                    return self._loop.run(implementation(request, AioContext(context)))
                except RpcAborted:
                    # Status already recorded on the context; grpc_testing ends the RPC
                    # with it (the None response is never delivered as a message).
                    return None

        return handle

    def _stream_handler(
        self, implementation: Callable[[Any, AioContext], AsyncIterator[Any]]
    ) -> StreamHandler:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._tracked():
                stream = _Stream(implementation(request, AioContext(context)), self._loop)
                # grpc_testing runs termination callbacks (client cancel, deadline) in a
                # thread of their own: cancel the pending pull so the handler wakes up.
                context.add_callback(stream.cancel_threadsafe)
                try:
                    while context.is_active():
                        try:
                            item = stream.pull(context)
                        except (StopAsyncIteration, concurrent.futures.CancelledError, RpcAborted):
                            return  # ended, cancelled, or aborted (status already recorded)
                        yield item
                finally:
                    stream.close()

        return handle


class _Stream:
    """One async generator, pulled from a foreign thread, cancellable from any thread.

    Cancellation is done on the loop, by cancelling the asyncio task running the pending
    ``__anext__``: the thread-safe future then completes only once the generator has
    really settled, so ``aclose`` never meets a generator that is still running.
    """

    def __init__(self, agen: AsyncIterator[Any], loop: LoopThread) -> None:
        self._agen = agen
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False  # only touched on the loop thread

    def pull(self, context: grpc.ServicerContext) -> Any:
        """Return the next item; StopAsyncIteration at the end, CancelledError once cancelled."""
        future = self._loop.submit(self._next())
        if not context.is_active():
            # The RPC ended before the cancel callback could see this pull.
            self.cancel_threadsafe()
        try:
            return future.result(HANG_GUARD_S)
        except TimeoutError:
            self.cancel_threadsafe()
            raise

    async def _next(self) -> Any:
        if self._cancelled:
            raise asyncio.CancelledError
        self._task = asyncio.current_task()
        try:
            return await anext(self._agen)
        finally:
            self._task = None

    def _cancel(self) -> None:
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    def cancel_threadsafe(self) -> None:
        """Cancel the pending pull (and every later one) from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.loop.call_soon_threadsafe(self._cancel)

    def close(self) -> None:
        """Close the async generator on the loop (a no-op once it has finished)."""
        aclose = getattr(self._agen, "aclose", None)
        if aclose is None or not self._loop.loop.is_running():
            return  # torn down already; LoopThread.close closed the leftover generators
        self._loop.run(aclose())
