#!/usr/bin/env node
// A dispatcher in Node.js: asks lb-service which agent takes a request, then
// reports how the request went. Runs the whole pattern once, end to end:
//
//   register two agents -> SelectAgent (acquire) -> call the agent
//   -> RecordRequestEnd -> first WatchLoads snapshot -> GetStatistics
//
// Each step prints one JSON object to stdout. On any failure it prints one
// line to stderr ("dispatcher: <RPC> failed: <CODE>: <message>") and exits 1.
//
// The client is built at run time from the service's own proto file; there are
// no generated or copied stubs to keep in sync.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const { setTimeout: sleep } = require('node:timers/promises');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_PATH = path.resolve(__dirname, '..', '..', 'protos', 'lb', 'v1', 'load_balancer.proto');
const DEADLINE_MS = 5000; // every call gets this long before DEADLINE_EXCEEDED

const USAGE = `usage: node dispatcher.js [--target HOST:PORT] [--model NAME]

  --target HOST:PORT  lb-service address (default: 127.0.0.1:50051)
  --model NAME        model the request needs (default: llama3:70b)

Set LB_ADMIN_TOKEN to send "authorization: Bearer <token>" with every call.`;

// The two agents this example registers: a CPU-only Ollama host and a 24 GB GPU
// host that also serves the 70B model.
const AGENTS = [
  {
    id: 'cpu-1',
    host: '10.0.0.11',
    port: 11434,
    models: ['llama3:8b'],
    hardware: { cpu_cores: 32, ram_gb: 128 },
  },
  {
    id: 'gpu-1',
    host: '10.0.0.21',
    port: 11434,
    models: ['llama3:8b', 'llama3:70b'],
    hardware: { gpu: 'RTX 4090', vram_gb: 24, cpu_cores: 16 },
    parallel_slots: 4, // OLLAMA_NUM_PARALLEL: weighs its load; not a cap like max_connections
  },
];

/** A failed RPC, with the one-line message the dispatcher prints for it. */
class RpcFailure extends Error {
  constructor(rpc, err) {
    // grpc.status is a numeric enum with reverse mapping: status[9] === 'FAILED_PRECONDITION'.
    super(`${rpc} failed: ${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`);
    this.name = 'RpcFailure';
  }
}

/** Loads lb.v1 from the proto file and returns a LoadBalancer client for `target`. */
function connect(target) {
  const definition = protoLoader.loadSync(PROTO_PATH, {
    keepCase: true, // field names as in the proto: request_id, not requestId
    longs: String, // 64-bit integers arrive as decimal strings, as in proto3 JSON
    enums: String, // enum values arrive as names: 'STRATEGY_LEAST_CONNECTIONS'
    defaults: true, // unset fields arrive with their default values
    oneofs: true,
  });
  const { lb } = grpc.loadPackageDefinition(definition);
  return new lb.v1.LoadBalancer(target, grpc.credentials.createInsecure());
}

/** Per-call metadata: a bearer token when LB_ADMIN_TOKEN is set (admin RPCs may need it). */
function callMetadata() {
  const metadata = new grpc.Metadata();
  const token = process.env.LB_ADMIN_TOKEN;
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function callOptions() {
  return { deadline: Date.now() + DEADLINE_MS };
}

/** Calls unary RPC `rpc` and resolves with its reply (grpc-js's callback API, promisified). */
function unary(client, rpc, request) {
  return new Promise((resolve, reject) => {
    client[rpc](request, callMetadata(), callOptions(), (err, reply) =>
      err ? reject(new RpcFailure(rpc, err)) : resolve(reply),
    );
  });
}

/**
 * Opens WatchLoads, resolves with its first snapshot and cancels the stream.
 * Cancelling makes grpc-js end the call with status CANCELLED: expected here, not an error.
 */
function firstSnapshot(client, request) {
  return new Promise((resolve, reject) => {
    const call = client.WatchLoads(request, callMetadata(), callOptions());
    let snapshot;
    call.on('data', (message) => {
      if (snapshot !== undefined) return;
      snapshot = message;
      call.cancel();
    });
    call.on('error', (err) => {
      if (err.code === grpc.status.CANCELLED && snapshot !== undefined) resolve(snapshot);
      else reject(new RpcFailure('WatchLoads', err));
    });
    call.on('end', () => {
      if (snapshot !== undefined) resolve(snapshot);
      else reject(new Error('WatchLoads failed: stream ended before the first snapshot'));
    });
  });
}

/** Stands in for the real work: sending the request to the agent (e.g. Ollama's /api/generate). */
async function callAgent(agent) {
  await sleep(20);
  return `http://${agent.host}:${agent.port}/api/generate`;
}

function print(step) {
  console.log(JSON.stringify(step));
}

async function dispatch(client, model) {
  // 1. Register. RegisterAgent is an upsert, so doing it on every start is safe.
  for (const agent of AGENTS) {
    await unary(client, 'RegisterAgent', { agent });
    print({ step: 'register', agent: agent.id, models: agent.models });
  }

  // 2. Select with acquire: the pick and the start of the request are one atomic
  //    step, and the reply carries the lease (request_id) to end it with.
  const pick = await unary(client, 'SelectAgent', {
    task: { model, compute: 'COMPUTE_GPU' },
    session_id: 'chat-42',
    acquire: true,
  });
  print({
    step: 'select',
    agent: pick.agent.id,
    host: pick.agent.host,
    port: pick.agent.port,
    request_id: pick.request_id,
    strategy: pick.strategy,
    sticky: pick.sticky,
  });

  // 3. Call the agent, timing it, and 4. always end the lease, failed or not.
  const started = performance.now();
  let failed = false;
  try {
    const url = await callAgent(pick.agent);
    print({ step: 'call', agent: pick.agent.id, url });
  } catch (err) {
    failed = true;
    print({ step: 'call', agent: pick.agent.id, error: String(err) });
  } finally {
    const latency_ms = Math.round(performance.now() - started);
    // Ending by request_id is idempotent, so a retry here would be harmless.
    await unary(client, 'RecordRequestEnd', { request_id: pick.request_id, latency_ms, failed });
    print({ step: 'end', request_id: pick.request_id, latency_ms, failed });
  }

  // 5. Watch loads: the stream opens with a full snapshot of every agent.
  const snapshot = await firstSnapshot(client, { min_interval_ms: 500 });
  print({ step: 'watch', timestamp_ms: snapshot.timestamp_ms, loads: snapshot.loads });

  // 6. Service-wide counters.
  const stats = await unary(client, 'GetStatistics', {});
  print({ step: 'statistics', ...stats });
}

async function main() {
  let options;
  try {
    ({ values: options } = parseArgs({
      options: {
        target: { type: 'string', default: '127.0.0.1:50051' },
        model: { type: 'string', default: 'llama3:70b' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    console.error(`dispatcher: ${err.message} (see --help)`);
    process.exitCode = 2;
    return;
  }
  if (options.help) {
    console.log(USAGE);
    return;
  }

  let client;
  try {
    client = connect(options.target);
    await dispatch(client, options.model);
  } catch (err) {
    // One line, no stack trace: RpcFailure messages already name the RPC and the status.
    console.error(`dispatcher: ${String(err.message).replace(/\s*\n\s*/g, ' ')}`);
    process.exitCode = 1; // not process.exit(): let stdout flush
  } finally {
    client?.close();
  }
}

main();
