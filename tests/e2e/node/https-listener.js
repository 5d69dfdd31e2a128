#!/usr/bin/env node
// A hyco-https@1.4.5 listener (the official, unmodified npm package) for relay's end-to-end tests.
//
// It registers on a Hybrid Connection with createRelayedServer + listen() and answers the HTTP
// requests the relay forwards: echo the body, a fixed response (any status, headers, body size,
// written in chunks), or never answer. Every request is reported (method, url, headers, body
// digest, and whether it came over the control channel or a rendezvous socket) as JSON lines on
// stdout (see lib/harness.js). Run with --help for the options.
//
// Known library behaviour this script does not hide: hyco-https crashes on any "accept" message
// ("Extensions is not defined"); the crash is reported as {"event":"fatal"} and exit code 70.

'use strict';

const path = require('path');
const https = require('hyco-https');
const h = require('./lib/harness');

const NAME = path.basename(__filename);

const USAGE = `
Usage: node ${NAME} (--uri URI | --namespace NS --path HC) TOKEN [options]

A hyco-https listener. Reports JSON lines on stdout:
  starting, token, online, offline, rendezvous, request, responded, error, closed, fatal

Endpoint:
  --uri URI              listener URI written by hand, e.g.
                         ws://127.0.0.1:9080/$hc/hyco?sb-hc-action=listen
  --namespace NS --path HC
                         use the library helper createRelayListenUri(NS, HC)
                         (always wss://NS:443/$hc/HC?sb-hc-action=listen)
${h.TOKEN_USAGE}  --token-mode MODE      string (default; never renewed) or function (called at each connect
                         and hourly to send renewToken)
  --renew-interval-ms MS shorten the library's one-hour renewal timer to MS (function mode)
  --keep-alive-ms MS     the library's keepAliveTimeout: unsolicited pong every MS milliseconds

Responses:
  --respond MODE         echo (default: status, request body and its Content-Type back),
                         fixed (status, headers and body from the options below), never
  --status CODE          response status (default 200)
  --status-text TEXT     reason phrase (default: the library's standard phrase)
  --header "N: V"        response header (repeatable)
  --body-text TEXT       fixed body as UTF-8 text
  --body-size N          fixed body of N deterministic bytes: payload("binary", N, seed, 0)
  --body-kind KIND       binary (default: the SHA-256 blocks above) or bulk (the AES-CTR bulk
                         payload of lib/harness.js, generated while it is written: for bodies of
                         hundreds of megabytes)
  --seed SEED            payload seed (default "relay")
  --chunk-size N         write the body with res.write() in pieces of N bytes, then res.end()
                         (default: one res.end(body))
  --respond-delay-ms MS  wait MS milliseconds after the request body before answering
  --crash-after-bytes N  once N body bytes are written, kill this process with SIGKILL (a listener
                         that dies in the middle of a response)
  --max-payload BYTES    accept WebSocket messages up to BYTES (see below; default: the library's)

Other:
  --timeout-ms MS        exit with code 3 after MS milliseconds (default: run until killed)
  -h, --help             show this text

Stdin commands (one JSON object per line, when RELAY_HARNESS_STDIN=1):
  {"command":"close"}    server.close(): close the control channel, then exit
  {"command":"exit"}     exit at once

TLS: the library takes no TLS options; trust a development CA with NODE_EXTRA_CA_CERTS=ca.pem.

Request bodies are hashed as they arrive (only echo keeps them). A request body reaches the library
as one WebSocket message, and its ws 6 sockets refuse messages above 100 MiB (maxPayload) with close
code 1009; the library offers no option. --max-payload wraps ws's WebSocket.prototype.setSocket so
that every socket the library opens gets that limit instead (the library code is not changed).
`;

const OPTIONS = Object.assign(
  {
    uri: { type: 'string' },
    namespace: { type: 'string' },
    path: { type: 'string' },
    'keep-alive-ms': { type: 'string' },
    respond: { type: 'string' },
    status: { type: 'string' },
    'status-text': { type: 'string' },
    header: { type: 'string', multiple: true },
    'body-text': { type: 'string' },
    'body-size': { type: 'string' },
    seed: { type: 'string' },
    'chunk-size': { type: 'string' },
    'respond-delay-ms': { type: 'string' },
    'body-kind': { type: 'string' },
    'crash-after-bytes': { type: 'string' },
    'max-payload': { type: 'string' },
    'timeout-ms': { type: 'string' },
  },
  h.TOKEN_OPTIONS
);

const MODES = ['echo', 'fixed', 'never'];

function settings(values) {
  const mode = values.respond || 'echo';
  if (!MODES.includes(mode)) {
    throw new h.UsageError('--respond must be one of ' + MODES.join(', ') + ', not ' + JSON.stringify(mode));
  }
  const bodySize = h.integer(values, 'body-size', 0, undefined);
  if (bodySize !== undefined && values['body-text'] !== undefined) {
    throw new h.UsageError('give --body-text or --body-size, not both');
  }
  if (mode !== 'fixed' && (bodySize !== undefined || values['body-text'] !== undefined)) {
    throw new h.UsageError('--body-text and --body-size need --respond fixed');
  }
  const seed = values.seed !== undefined ? values.seed : 'relay';
  const bodyKind = values['body-kind'] || 'binary';
  if (bodyKind !== 'binary' && bodyKind !== 'bulk') {
    throw new h.UsageError('--body-kind must be binary or bulk, not ' + JSON.stringify(bodyKind));
  }
  if (bodyKind === 'bulk' && bodySize === undefined) {
    throw new h.UsageError('--body-kind bulk needs --body-size');
  }
  let body = null;
  if (bodySize !== undefined && bodyKind === 'bulk') {
    body = { bulk: true, length: bodySize, seed: seed };
  } else if (bodySize !== undefined) {
    body = h.payload('binary', bodySize, seed, 0);
  } else if (values['body-text'] !== undefined) {
    body = Buffer.from(values['body-text'], 'utf8');
  }
  const keepAliveMs = h.integer(values, 'keep-alive-ms', 1, undefined);
  return {
    uri: h.endpointChoice(values) === 'uri' ? values.uri : https.createRelayListenUri(values.namespace, values.path),
    mode: mode,
    status: h.integer(values, 'status', 100, 200),
    statusText: values['status-text'],
    headers: h.headers(values.header),
    body: body,
    chunkSize: h.integer(values, 'chunk-size', 1, undefined),
    respondDelayMs: h.integer(values, 'respond-delay-ms', 0, 0),
    crashAfterBytes: h.integer(values, 'crash-after-bytes', 0, undefined),
    maxPayload: h.integer(values, 'max-payload', 1, undefined),
    // The library only calls asMilliseconds() on it (it expects a moment.duration).
    keepAlive: keepAliveMs === undefined ? null : { asMilliseconds: function () { return keepAliveMs; } },
    timeoutMs: h.integer(values, 'timeout-ms', 1, undefined),
  };
}

function respond(config, server, req, res, requestBody, fields) {
  let body = config.body;
  const responseHeaders = Object.assign({}, config.headers);
  if (config.mode === 'echo') {
    body = requestBody;
    if (req.headers['content-type'] !== undefined && !Object.keys(responseHeaders).some(function (k) {
      return k.toLowerCase() === 'content-type';
    })) {
      responseHeaders['Content-Type'] = req.headers['content-type'];
    }
  }
  if (config.statusText !== undefined) {
    res.writeHead(config.status, config.statusText, responseHeaders);
  } else {
    res.writeHead(config.status, responseHeaders);
  }
  const sent = new h.Digest();
  let writes = 0;
  const finished = function () {
    const summary = sent.finish();
    h.emit('responded', Object.assign({
      status: config.status,
      length: summary.length,
      sha256: summary.sha256,
      writes: writes,
      // Small responses go back on the control channel; above 64 kB the library opens a
      // rendezvous to the request's address (or uses the rendezvous the request came on).
      channel: res.connection === server.controlChannel ? 'control' : 'rendezvous',
    }, fields));
  };
  const write = function (chunk) {
    if (config.crashAfterBytes !== undefined && sent.length + chunk.length > config.crashAfterBytes) {
      chunk = chunk.subarray(0, config.crashAfterBytes - sent.length);
    }
    if (chunk.length) {
      res.write(chunk);
      sent.update(chunk);
      writes += 1;
    }
    if (config.crashAfterBytes !== undefined && sent.length >= config.crashAfterBytes) {
      h.emit('crashing', Object.assign({ written: sent.length }, fields));
      // Let the socket flush what was written, then die without closing anything.
      setTimeout(function () { process.kill(process.pid, 'SIGKILL'); }, 200);
      return false;
    }
    return true;
  };
  if (body !== null && body.bulk) {
    // Written a piece per turn of the event loop, so ws can put each on the wire before the next.
    const chunks = h.bulkChunks(body.length, body.seed, 0, config.chunkSize || 65536);
    const step = function () {
      const next = chunks.next();
      if (next.done) {
        res.end();
        finished();
        return;
      }
      if (write(next.value)) {
        setImmediate(step);
      }
    };
    step();
    return;
  }
  if (body !== null && body.length > 0 && config.chunkSize !== undefined) {
    for (let offset = 0; offset < body.length; offset += config.chunkSize) {
      if (!write(body.subarray(offset, offset + config.chunkSize))) {
        return;
      }
    }
    res.end();
  } else if (body !== null && body.length > 0) {
    if (config.crashAfterBytes !== undefined) {
      write(body);
      return;
    }
    res.end(body);
    sent.update(body);
    writes = 1;
  } else {
    res.end();
  }
  finished();
}

/** Give every ws socket (all that the library opens) a message size limit of `bytes`. */
function raiseMaxPayload(bytes) {
  const WebSocket = require('ws');
  const setSocket = WebSocket.prototype.setSocket;
  WebSocket.prototype.setSocket = function (socket, head, maxPayload) {
    const rest = Array.prototype.slice.call(arguments, 3);
    return setSocket.apply(this, [socket, head, bytes].concat(rest));
  };
}

function main() {
  const values = h.parseCommandLine(NAME, USAGE, OPTIONS, process.argv.slice(2));
  const config = settings(values);
  if (config.maxPayload !== undefined) {
    raiseMaxPayload(config.maxPayload);
  }
  let server = null;
  const isOpen = function () {
    return server !== null && server.controlChannel && server.controlChannel.readyState === 1;
  };
  const token = h.listenerToken(values, h.tokenSource(values, config.uri, https.createRelayToken), isOpen);
  h.watchdog(config.timeoutMs);

  let onlineCount = 0;
  let requestCount = 0;

  function onRequest(req, res) {
    requestCount += 1;
    const fields = { n: requestCount, id: res.requestId };
    const channel = req.socket === server.controlChannel ? 'control' : 'rendezvous';
    const chunks = [];
    const received = new h.Digest();
    req.on('data', function (chunk) {
      received.update(chunk);
      if (config.mode === 'echo') {
        chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
      }
    });
    req.on('end', function () {
      const requestBody = Buffer.concat(chunks);
      const summary = received.finish();
      h.emit('request', Object.assign({
        method: req.method,
        url: req.url,
        headers: req.headers,
        channel: channel,
        length: summary.length,
        sha256: summary.sha256,
      }, fields));
      if (config.mode === 'never') {
        return;
      }
      setTimeout(function () {
        respond(config, server, req, res, requestBody, fields);
      }, config.respondDelayMs);
    });
  }

  const options = { server: config.uri, token: token };
  if (config.keepAlive !== null) {
    options.keepAliveTimeout = config.keepAlive;
  }
  h.emit('starting', { uri: config.uri });
  server = https.createRelayedServer(options, onRequest);

  server.on('listening', function () {
    server.controlChannel.on('close', function (code, reason) {
      h.emit('offline', { code: code, reason: reason ? String(reason) : '' });
    });
    onlineCount += 1;
    h.emit('online', { count: onlineCount, uri: config.uri });
  });

  server.on('requestchannel', function (channel) {
    h.emit('rendezvous', { url: channel.url });
  });

  server.on('error', function (err) {
    h.emit('error', Object.assign({ where: 'control' }, h.errorFields(err)));
  });

  server.on('close', function () {
    h.emit('closed', {});
    h.exit(h.EXIT_OK);
  });

  server.listen();

  h.listenForCommands({
    close: function () {
      server.close();
    },
  });
}

h.run(NAME, main);
