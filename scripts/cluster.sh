#!/usr/bin/env bash
# A local cluster for trying replicas out (`make cluster`): one Redis and three
# `lb-service serve` replicas sharing it, in the foreground. Ctrl-C stops everything.
#
#   REDIS_URL      use this Redis instead of starting a private redis-server
#   REDIS_PORT     port of the private redis-server (default 6390)
#   PORTS          the replicas' ports (default "50061 50062 50063")
#   LB_STORE_PREFIX, LB_* options: passed through to every replica as usual
set -euo pipefail

BIN=${BIN:-.venv/bin}
REDIS_PORT=${REDIS_PORT:-6390}
PORTS=${PORTS:-50061 50062 50063}
children=()
scratch=""

stop_all() {
	trap - EXIT INT TERM
	# Replicas first (they drain and close their Redis connections), then Redis.
	for ((i = ${#children[@]} - 1; i >= 0; i--)); do
		kill -TERM "${children[i]}" 2>/dev/null || true
		wait "${children[i]}" 2>/dev/null || true
	done
	[[ -n $scratch ]] && rm -rf "$scratch"
	echo "cluster stopped" >&2
}
trap stop_all EXIT
trap 'exit 130' INT TERM

if [[ ! -x $BIN/lb-service ]]; then
	echo "cluster: $BIN/lb-service not found; run 'make install' first" >&2
	exit 1
fi

if [[ -n ${REDIS_URL:-} ]]; then
	store=$REDIS_URL
else
	if ! command -v redis-server >/dev/null; then
		echo "cluster: redis-server not found: install Redis (apt-get install redis-server," \
			"brew install redis) or set REDIS_URL=redis://HOST:PORT/DB" >&2
		exit 1
	fi
	scratch=$(mktemp -d)
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
		--dir "$scratch" --logfile "$scratch/redis.log" &
	children+=($!)
	store=redis://127.0.0.1:$REDIS_PORT/0
	for _ in $(seq 100); do
		if "$BIN/python" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()" \
			"$store" 2>/dev/null; then
			break
		fi
		if ! kill -0 "${children[0]}" 2>/dev/null; then
			echo "cluster: redis-server exited (port $REDIS_PORT taken?):" >&2
			cat "$scratch/redis.log" >&2
			exit 1
		fi
		sleep 0.1
	done
fi

targets=()
for port in $PORTS; do
	# Each replica's log lines go to the terminal, prefixed with its port.
	"$BIN/lb-service" serve --listen "127.0.0.1:$port" --store "$store" --log-format console \
		> >(sed -u "s/^/[$port] /") 2>&1 &
	children+=($!)
	targets+=("127.0.0.1:$port")
done
target="ipv4:$(
	IFS=,
	echo "${targets[*]}"
)"

for address in "${targets[@]}"; do
	for attempt in $(seq 100); do
		if "$BIN/lb-service" strategy get --target "$address" --timeout 1 >/dev/null 2>&1; then
			break
		fi
		if ((attempt == 100)); then
			echo "cluster: the replica on $address did not start" >&2
			exit 1
		fi
		sleep 0.1
	done
done

cat <<EOF

lb-service cluster: ${#targets[@]} replicas sharing $store (key prefix ${LB_STORE_PREFIX:-lb})
  target: $target

Try, in another terminal:
  $BIN/lb-service agents add gpu-1 --host 10.0.0.1 --port 8000 --target $target
  $BIN/lb-service select --acquire --target $target
  $BIN/lb-service loads --target ${targets[0]}

Ctrl-C stops everything this started.
EOF

# Until Ctrl-C, or until any child exits (then everything stops).
wait -n
echo "cluster: a process exited; stopping the rest" >&2
exit 1
