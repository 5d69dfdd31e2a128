// Shared plumbing for the interop scripts: argument parsing, the stdout line protocol,
// deterministic payloads, SAS tokens, slow readers and stdin commands.
//
// Line protocol: every line a script writes to stdout is one JSON object with an "event" key,
// e.g. {"event":"online"} or {"event":"message","type":"binary","length":1048576,"sha256":"..."}.
// Nothing else is ever written to stdout; diagnostics go to stderr. Keys are snake_case because
// the consumers are Python tests (tests/e2e/nodeharness.py).
//
// Exit codes: 0 the script ran its course (a refused upgrade is a reported outcome, not a failure),
// 1 a network error ended it early, 2 bad arguments, 3 watchdog timeout, 70 uncaught exception
// (reported first as {"event":"fatal"}; the official clients crash this way on some inputs).

'use strict';

const crypto = require('crypto');
const readline = require('readline');
const { parseArgs } = require('util');

const EXIT_OK = 0;
const EXIT_NETWORK = 1;
const EXIT_USAGE = 2;
const EXIT_TIMEOUT = 3;
const EXIT_FATAL = 70;

/** The hard-coded renewal period of both libraries' token timers (moment.duration(1, 'hours')). */
const LIBRARY_RENEW_MS = 60 * 60 * 1000;

/** Write one protocol line to stdout. */
function emit(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event: event }, fields || {})) + '\n');
}

/** Exit once everything written to stdout has been handed to the OS. */
function exit(code) {
  process.stdout.write('', function () {
    process.exit(code);
  });
}

/** Report uncaught exceptions as a "fatal" line before dying, so a test sees why the client crashed. */
function installFatalHandler() {
  process.on('uncaughtException', function (err) {
    emit('fatal', {
      message: String(err && err.message ? err.message : err),
      stack: err && err.stack ? String(err.stack) : null,
    });
    exit(EXIT_FATAL);
  });
}

/** Thrown for bad arguments; main() turns it into a message on stderr and exit code 2. */
class UsageError extends Error {}

/**
 * Parse argv with util.parseArgs. Prints usage and exits 0 on --help; on bad input prints the
 * problem to stderr and exits 2. Returns the parsed values.
 */
function parseCommandLine(name, usage, options, argv) {
  const spec = Object.assign({ help: { type: 'boolean', short: 'h' } }, options);
  let values;
  try {
    values = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false }).values;
  } catch (err) {
    usageFailure(name, err.message);
  }
  if (values.help) {
    process.stdout.write(usage.replace(/^\n/, ''));
    process.exit(EXIT_OK);
  }
  return values;
}

/** Report a usage problem on stderr and exit 2. */
function usageFailure(name, message) {
  process.stderr.write(name + ': ' + message + '\nTry `node ' + name + ' --help` for usage.\n');
  process.exit(EXIT_USAGE);
}

/** Run main(), turning UsageError into exit code 2 with the message on stderr. */
function run(name, main) {
  installFatalHandler();
  try {
    main();
  } catch (err) {
    if (err instanceof UsageError) {
      usageFailure(name, err.message);
    }
    throw err;
  }
}

/** Parse a decimal integer option, with bounds. Undefined stays undefined unless a default is given. */
function integer(values, key, min, fallback) {
  const raw = values[key];
  if (raw === undefined) {
    return fallback;
  }
  if (!/^-?\d+$/.test(raw)) {
    throw new UsageError('--' + key + ' must be an integer, not ' + JSON.stringify(raw));
  }
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new UsageError('--' + key + ' must be an integer >= ' + min + ', not ' + raw);
  }
  return value;
}

/** Parse repeated "Name: Value" options into an object (later duplicates win). */
function headers(list) {
  const result = {};
  for (const item of list || []) {
    const colon = item.indexOf(':');
    if (colon <= 0) {
      throw new UsageError('--header must look like "Name: Value", not ' + JSON.stringify(item));
    }
    result[item.slice(0, colon).trim()] = item.slice(colon + 1).trim();
  }
  return result;
}

/** Require exactly one of two ways to name the endpoint: a full URI or namespace + path. */
function endpointChoice(values) {
  const hasUri = values.uri !== undefined;
  const hasNamespace = values.namespace !== undefined || values.path !== undefined;
  if (hasUri === hasNamespace) {
    throw new UsageError('give either --uri, or --namespace and --path (the library URI helpers)');
  }
  if (hasNamespace && (values.namespace === undefined || values.path === undefined)) {
    throw new UsageError('--namespace and --path go together');
  }
  return hasUri ? 'uri' : 'helpers';
}

// ---------------------------------------------------------------------------------------------
// Deterministic payloads. The same definition lives in tests/e2e/nodeharness.py (payload()):
//   block(k)  = SHA-256 of the UTF-8 string "<seed>:<index>:<k>", k = 0, 1, 2, ...
//   binary    = block(0) || block(1) || ...            truncated to <length> bytes
//   text      = hex(block(0)) || hex(block(1)) || ...  truncated to <length> characters
// ---------------------------------------------------------------------------------------------

function payload(kind, length, seed, index) {
  const perBlock = kind === 'text' ? 64 : 32;
  const blocks = Math.ceil(length / perBlock);
  const parts = [];
  for (let k = 0; k < blocks; k++) {
    const digest = crypto.createHash('sha256').update(seed + ':' + index + ':' + k, 'utf8').digest();
    parts.push(kind === 'text' ? Buffer.from(digest.toString('hex'), 'ascii') : digest);
  }
  const bytes = Buffer.concat(parts).subarray(0, length);
  return kind === 'text' ? bytes.toString('ascii') : bytes;
}

// ---------------------------------------------------------------------------------------------
// Bulk payloads, for transfers of hundreds of megabytes: the SHA-256 blocks above cost a hash per
// 32 bytes, far too slow. The same definition lives in tests/e2e/nodeharness.py (bulk_chunks()):
//   key      = SHA-256("bulk:<seed>")[0:16]
//   iv       = SHA-256("bulk:<seed>:<index>")[0:16]
//   content  = the AES-128-CTR keystream for (key, iv), i.e. AES-128-CTR encryption of zero bytes,
//              cut to <length> bytes
// It is deterministic, does not repeat, and is produced piece by piece, never held whole.
// ---------------------------------------------------------------------------------------------

/** A generator of Buffers (each at most `chunkSize` bytes) that together make the bulk payload. */
function* bulkChunks(length, seed, index, chunkSize) {
  const key = crypto.createHash('sha256').update('bulk:' + seed, 'utf8').digest().subarray(0, 16);
  const iv = crypto.createHash('sha256').update('bulk:' + seed + ':' + index, 'utf8').digest().subarray(0, 16);
  const cipher = crypto.createCipheriv('aes-128-ctr', key, iv);
  const zeros = Buffer.alloc(chunkSize);
  for (let offset = 0; offset < length; offset += chunkSize) {
    const size = Math.min(chunkSize, length - offset);
    yield cipher.update(size === chunkSize ? zeros : zeros.subarray(0, size));
  }
}

/** Incremental length + SHA-256 of streamed data, keeping at most `keep` leading bytes as text. */
class Digest {
  constructor(keep) {
    this.hash = crypto.createHash('sha256');
    this.length = 0;
    this.keep = keep || 0;
    this.head = [];
    this.headLength = 0;
  }

  update(chunk) {
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    this.hash.update(bytes);
    this.length += bytes.length;
    if (this.headLength < this.keep) {
      const piece = bytes.subarray(0, this.keep - this.headLength);
      this.head.push(piece);
      this.headLength += piece.length;
    }
  }

  /** {length, sha256} once all data went through update(); `text` too when everything was kept. */
  finish() {
    const result = { length: this.length, sha256: this.hash.digest('hex') };
    if (this.keep && this.length <= this.keep) {
      result.text = Buffer.concat(this.head).toString('utf8');
    }
    return result;
  }
}

/** Parse a message spec: text:<length>, binary:<length>, bulk:<length> or literal:<text>. */
function messageSpec(spec) {
  const match = /^(text|binary|bulk|literal):([\s\S]*)$/.exec(spec);
  if (!match) {
    throw new UsageError('--message must be text:<length>, binary:<length>, bulk:<length> or literal:<text>, not ' +
      JSON.stringify(spec));
  }
  if (match[1] === 'literal') {
    return { kind: 'literal', text: match[2] };
  }
  if (!/^\d+$/.test(match[2])) {
    throw new UsageError('--message ' + match[1] + ': needs a length in bytes, not ' + JSON.stringify(match[2]));
  }
  return { kind: match[1], length: Number(match[2]) };
}

/** Whether a message spec is sent as a binary message (binary and bulk). */
function isBinarySpec(spec) {
  return spec.kind === 'binary' || spec.kind === 'bulk';
}

/**
 * Build the data of a message spec: a string for text, a Buffer for binary and bulk. A bulk message is
 * the bulk payload below (cheap for tens of megabytes, where binary's hash per 32 bytes takes seconds).
 */
function messageData(spec, seed, index) {
  if (spec.kind === 'literal') {
    return spec.text;
  }
  if (spec.kind === 'bulk') {
    return Buffer.concat(Array.from(bulkChunks(spec.length, seed, index, 1024 * 1024)));
  }
  return payload(spec.kind, spec.length, seed, index);
}

/** Describe received or sent data for the line protocol: type, byte length, SHA-256, short text. */
function describe(data, binary) {
  let bytes;
  if (Buffer.isBuffer(data)) {
    bytes = data;
  } else if (data instanceof ArrayBuffer) {
    bytes = Buffer.from(new Uint8Array(data));
  } else {
    bytes = Buffer.from(String(data), 'utf8');
  }
  const result = {
    type: binary ? 'binary' : 'text',
    length: bytes.length,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
  };
  if (!binary && bytes.length <= 256) {
    result.text = bytes.toString('utf8');
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/** Token options shared by all scripts (values are also read from the environment). */
const TOKEN_OPTIONS = {
  token: { type: 'string' },
  'key-name': { type: 'string' },
  key: { type: 'string' },
  'token-uri': { type: 'string' },
  'token-ttl': { type: 'string' },
  'token-mode': { type: 'string' },
  'renew-interval-ms': { type: 'string' },
};

const TOKEN_USAGE = `
Token (the secrets may come from the environment instead of argv):
  --token TOKEN          a ready SharedAccessSignature string (env HC_TOKEN); "" sends no token
  --key-name NAME        shared access rule name (env HC_KEY_NAME) } the library's createRelayToken
  --key KEY              shared access key (env HC_KEY)             } signs a token for --token-uri
  --token-uri URI        resource the token is for (default: the endpoint URI)
  --token-ttl SECONDS    lifetime of generated tokens (default 3600, as the library)
`;

/**
 * Resolve the token options into a string (or null when none was given). `createRelayToken` is
 * the library's own token function; a new token is generated on each call of the returned getter.
 */
function tokenSource(values, defaultUri, createRelayToken) {
  const token = values.token !== undefined ? values.token : process.env.HC_TOKEN;
  const keyName = values['key-name'] !== undefined ? values['key-name'] : process.env.HC_KEY_NAME;
  const key = values.key !== undefined ? values.key : process.env.HC_KEY;
  const ttl = integer(values, 'token-ttl', 1, 3600);
  if (token !== undefined && (keyName !== undefined || key !== undefined)) {
    throw new UsageError('give either --token, or --key-name and --key, not both');
  }
  if (token !== undefined) {
    return { kind: 'static', next: function () { return token; } };
  }
  if (keyName === undefined && key === undefined) {
    return null;
  }
  if (keyName === undefined || key === undefined) {
    throw new UsageError('--key-name and --key go together');
  }
  const uri = values['token-uri'] || defaultUri;
  return {
    kind: 'generated',
    next: function () { return createRelayToken(uri, keyName, key, ttl); },
  };
}

/** The expiry (se) of a SAS token string, or null. */
function tokenExpiry(token) {
  const match = /[ &]se=(\d+)/.exec(token || '');
  return match ? Number(match[1]) : null;
}

/**
 * Make the `token` option for createRelayedServer: a string (never renewed by the library) or a
 * function (called at every connect and, hourly, for renewToken). Each call of the function is
 * reported as {"event":"token","purpose":"connect"|"renew","expires":se}.
 *
 * With --renew-interval-ms the library's hard-coded one-hour renewal timer is shortened: the
 * global setInterval is wrapped so that exactly that delay (3,600,000 ms) becomes the given value.
 * The library code is not touched; only its clock is compressed, as a fake clock would do.
 */
function listenerToken(values, source, isOpen) {
  const mode = values['token-mode'] || 'string';
  if (mode !== 'string' && mode !== 'function') {
    throw new UsageError('--token-mode must be string or function, not ' + JSON.stringify(mode));
  }
  const renewMs = integer(values, 'renew-interval-ms', 1, undefined);
  if (renewMs !== undefined && mode !== 'function') {
    throw new UsageError('--renew-interval-ms needs --token-mode function (string tokens are never renewed)');
  }
  if (source === null) {
    throw new UsageError('a listener needs a token: --token, or --key-name and --key');
  }
  if (renewMs !== undefined) {
    compressRenewTimer(renewMs);
  }
  if (mode === 'string') {
    const token = source.next();
    emit('token', { purpose: 'connect', mode: 'string', expires: tokenExpiry(token) });
    return token;
  }
  return function tokenFunction() {
    const token = source.next();
    emit('token', { purpose: isOpen() ? 'renew' : 'connect', mode: 'function', expires: tokenExpiry(token) });
    return token;
  };
}

function compressRenewTimer(renewMs) {
  const original = global.setInterval;
  global.setInterval = function setInterval(callback, delay) {
    const rest = Array.prototype.slice.call(arguments, 2);
    if (delay === LIBRARY_RENEW_MS) {
      delay = renewMs;
    }
    return original.apply(this, [callback, delay].concat(rest));
  };
}

// ---------------------------------------------------------------------------------------------
// Slow readers and stdin commands
// ---------------------------------------------------------------------------------------------

const READER_OPTIONS = {
  'pause-on-open': { type: 'boolean' },
  'pause-ms': { type: 'string' },
  'pause-per-message-ms': { type: 'string' },
};

const READER_USAGE = `
Slow reader (back-pressure), applied to each WebSocket this script reads from:
  --pause-on-open        stop reading from the socket as soon as it opens; resume after --pause-ms,
                         or on the stdin command {"command":"resume"}
  --pause-ms MS          how long --pause-on-open lasts (default: until resumed)
  --pause-per-message-ms MS
                         after each received message stop reading for MS milliseconds
`;

function readerPolicy(values) {
  const policy = {
    pauseOnOpen: Boolean(values['pause-on-open']),
    pauseMs: integer(values, 'pause-ms', 0, undefined),
    perMessageMs: integer(values, 'pause-per-message-ms', 0, undefined),
  };
  if (policy.pauseMs !== undefined && !policy.pauseOnOpen) {
    throw new UsageError('--pause-ms needs --pause-on-open');
  }
  return policy;
}

/**
 * A set of sockets paused by a slow-reader policy. ws 1.1.5 and ws 6 both expose the underlying
 * net.Socket as `_socket`; pausing it stops reads, so TCP windows fill and the peer (the relay)
 * sees back-pressure. `fields` identify the connection in the paused/resumed lines.
 */
class Readers {
  constructor(policy) {
    this.policy = policy;
    this.paused = new Map();
  }

  opened(ws, fields) {
    if (!this.policy.pauseOnOpen) {
      return;
    }
    this.pause(ws, fields, 'open');
    if (this.policy.pauseMs !== undefined) {
      setTimeout(() => this.resume(ws), this.policy.pauseMs);
    }
  }

  received(ws, fields) {
    if (this.policy.perMessageMs === undefined || this.paused.has(ws)) {
      return;
    }
    this.pause(ws, fields, 'message');
    setTimeout(() => this.resume(ws), this.policy.perMessageMs);
  }

  pause(ws, fields, why) {
    if (!ws._socket || this.paused.has(ws)) {
      return;
    }
    ws._socket.pause();
    this.paused.set(ws, fields);
    emit('paused', Object.assign({ why: why }, fields));
  }

  resume(ws) {
    const fields = this.paused.get(ws);
    if (fields === undefined) {
      return;
    }
    this.paused.delete(ws);
    if (ws._socket) {
      ws._socket.resume();
    }
    emit('resumed', fields);
  }

  resumeAll() {
    for (const ws of Array.from(this.paused.keys())) {
      this.resume(ws);
    }
  }

  forget(ws) {
    this.paused.delete(ws);
  }
}

/**
 * Read JSON commands from stdin, one per line, when RELAY_HARNESS_STDIN=1 (the Python harness sets
 * it). When stdin closes the script exits: the test process that started it is gone. Handlers map
 * command names to functions; "exit" is always available. Unknown commands are reported.
 */
function listenForCommands(handlers) {
  if (process.env.RELAY_HARNESS_STDIN !== '1') {
    return;
  }
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', function (line) {
    if (!line.trim()) {
      return;
    }
    let command;
    try {
      command = JSON.parse(line);
    } catch (err) {
      emit('command-error', { line: line, message: 'not JSON' });
      return;
    }
    const name = command && command.command;
    if (name === 'exit') {
      exit(EXIT_OK);
      return;
    }
    const handler = handlers[name];
    if (typeof handler !== 'function') {
      emit('command-error', { line: line, message: 'unknown command' });
      return;
    }
    handler(command);
    emit('command-done', { command: name });
  });
  lines.on('close', function () {
    exit(EXIT_OK);
  });
}

/** Start a watchdog: after ms milliseconds report {"event":"timeout"} and exit 3. */
function watchdog(ms) {
  if (ms) {
    setTimeout(function () {
      emit('timeout', { after_ms: ms });
      exit(EXIT_TIMEOUT);
    }, ms).unref();
  }
}

/** The HTTP status inside the error messages of ws 1.1.5 and ws 6 for a refused upgrade. */
function statusFromError(err) {
  const match = /unexpected server response(?: \(|: )(\d{3})/i.exec(String(err && err.message ? err.message : err));
  return match ? Number(match[1]) : null;
}

/** A plain-object summary of an error event from ws 1.1.5 or ws 6 (both emit odd shapes). */
function errorFields(err) {
  const fields = { message: String(err && err.message ? err.message : err) };
  if (err && err.code) {
    fields.code = err.code;
  }
  const status = statusFromError(err);
  if (status !== null) {
    fields.status = status;
  }
  return fields;
}

module.exports = {
  Digest,
  bulkChunks,
  EXIT_FATAL,
  EXIT_NETWORK,
  EXIT_OK,
  EXIT_TIMEOUT,
  EXIT_USAGE,
  LIBRARY_RENEW_MS,
  READER_OPTIONS,
  READER_USAGE,
  Readers,
  TOKEN_OPTIONS,
  TOKEN_USAGE,
  UsageError,
  describe,
  emit,
  endpointChoice,
  errorFields,
  exit,
  headers,
  integer,
  isBinarySpec,
  listenForCommands,
  listenerToken,
  messageData,
  messageSpec,
  parseCommandLine,
  payload,
  readerPolicy,
  run,
  tokenExpiry,
  tokenSource,
  watchdog,
};
