#!/usr/bin/env node
// A hyco-ws@1.0.5 WebSocket sender (the package re-exports ws 1.1.5) for relay's end-to-end tests.
//
// It connects to a Hybrid Connection like the package's samples do (createRelaySendUri or a
// hand-written URI, token in the ServiceBusAuthorization header or the sb-hc-token query), sends a
// list of deterministic messages, waits for the expected replies, closes, and reports everything
// as JSON lines on stdout (see lib/harness.js). Run with --help for the options.

'use strict';

const path = require('path');
const WS = require('hyco-ws');
const h = require('./lib/harness');

const NAME = path.basename(__filename);

const USAGE = `
Usage: node ${NAME} (--uri URI | --namespace NS --path HC) [options]

A hyco-ws WebSocket sender. Reports JSON lines on stdout:
  connecting, open, sent, message, paused, resumed, closing, close, upgrade-failed, error, timeout, fatal
Exit code 0 after close or upgrade-failed, 1 on a network error before any HTTP answer.

Endpoint:
  --uri URI              sender URI written by hand, e.g.
                         ws://127.0.0.1:9080/$hc/hyco/suffix?x=1&sb-hc-action=connect
  --namespace NS --path HC
                         use the library helper createRelaySendUri(NS, HC, token?, id?)
                         (always wss://NS:443/$hc/HC?sb-hc-action=connect...)
  --id ID                tracking id: sb-hc-id query parameter
${h.TOKEN_USAGE}  --token-in WHERE       header (default: ServiceBusAuthorization), query (sb-hc-token), or both

Handshake:
  --protocol NAME        offer a subprotocol (repeatable; the order is kept)
  --header "N: V"        extra upgrade request header (repeatable)

Messages (sent in order, one after the other; each waits for the previous write to finish):
  --message SPEC         text:<length>, binary:<length>, bulk:<length> or literal:<text> (repeatable); the content
                         of message i is payload(kind, length, seed, i), or the bulk payload for
                         bulk, see README.md
  --seed SEED            payload seed (default "relay")
  --send-delay-ms MS     pause between messages (default 0)
  --burst                hand all messages to the socket at once instead of one by one

Ending:
  --expect N             replies to wait for before closing (default: number of messages)
  --wait-for-close       do not close; wait until the peer closes
  --close-code CODE      close code (default 1000)
  --close-reason TEXT    close reason (default empty)
${h.READER_USAGE}
Other:
  --timeout-ms MS        report timeout and exit 3 after MS milliseconds (default 120000; 0 = never)
  -h, --help             show this text

Stdin commands (one JSON object per line, when RELAY_HARNESS_STDIN=1):
  {"command":"pause"}, {"command":"resume"}, {"command":"close"}, {"command":"exit"}

TLS: trust a development CA with NODE_EXTRA_CA_CERTS=ca.pem.
`;

const OPTIONS = Object.assign(
  {
    uri: { type: 'string' },
    namespace: { type: 'string' },
    path: { type: 'string' },
    id: { type: 'string' },
    'token-in': { type: 'string' },
    protocol: { type: 'string', multiple: true },
    header: { type: 'string', multiple: true },
    message: { type: 'string', multiple: true },
    seed: { type: 'string' },
    'send-delay-ms': { type: 'string' },
    burst: { type: 'boolean' },
    expect: { type: 'string' },
    'wait-for-close': { type: 'boolean' },
    'close-code': { type: 'string' },
    'close-reason': { type: 'string' },
    'timeout-ms': { type: 'string' },
  },
  h.TOKEN_OPTIONS,
  h.READER_OPTIONS
);

function appendQuery(uri, name, value) {
  return uri + (uri.indexOf('?') === -1 ? '?' : '&') + name + '=' + encodeURIComponent(value);
}

function settings(values) {
  const tokenIn = values['token-in'] || 'header';
  if (!['header', 'query', 'both'].includes(tokenIn)) {
    throw new h.UsageError('--token-in must be header, query or both, not ' + JSON.stringify(tokenIn));
  }
  for (const key of ['token-mode', 'renew-interval-ms']) {
    if (values[key] !== undefined) {
      throw new h.UsageError('--' + key + ' is for listeners');
    }
  }
  const how = h.endpointChoice(values);
  // A token generated from key material is scoped to the URI without token or id, as a user would.
  const baseUri = how === 'uri' ? values.uri : WS.createRelaySendUri(values.namespace, values.path);
  const source = h.tokenSource(values, baseUri, WS.createRelayToken);
  const token = source === null ? null : source.next();
  const queryToken = token !== null && tokenIn !== 'header' ? token : null;
  let uri;
  if (how === 'uri') {
    uri = values.uri;
    if (queryToken !== null) {
      uri = appendQuery(uri, 'sb-hc-token', queryToken);
    }
    if (values.id !== undefined) {
      uri = appendQuery(uri, 'sb-hc-id', values.id);
    }
  } else {
    uri = WS.createRelaySendUri(values.namespace, values.path, queryToken, values.id);
  }
  const requestHeaders = h.headers(values.header);
  if (token !== null && tokenIn !== 'query') {
    requestHeaders.ServiceBusAuthorization = token;
  }
  const messages = (values.message || []).map(h.messageSpec);
  const expect = h.integer(values, 'expect', 0, messages.length);
  return {
    uri: uri,
    protocols: values.protocol || [],
    headers: requestHeaders,
    messages: messages,
    seed: values.seed !== undefined ? values.seed : 'relay',
    sendDelayMs: h.integer(values, 'send-delay-ms', 0, 0),
    burst: Boolean(values.burst),
    expect: expect,
    waitForClose: Boolean(values['wait-for-close']),
    closeCode: h.integer(values, 'close-code', 1000, 1000),
    closeReason: values['close-reason'] || '',
    readers: new h.Readers(h.readerPolicy(values)),
    timeoutMs: h.integer(values, 'timeout-ms', 0, 120000),
  };
}

function main() {
  const values = h.parseCommandLine(NAME, USAGE, OPTIONS, process.argv.slice(2));
  const config = settings(values);
  h.watchdog(config.timeoutMs);

  const fields = {};
  let opened = false;
  let answered = false;
  let received = 0;
  let closing = false;
  let sentAll = config.messages.length === 0;

  h.emit('connecting', { uri: config.uri, protocols: config.protocols });
  const ws = new WS(config.uri, config.protocols.length ? config.protocols : null, { headers: config.headers });

  function close() {
    if (closing || ws.readyState !== WS.OPEN) {
      return;
    }
    closing = true;
    h.emit('closing', { code: config.closeCode, reason: config.closeReason });
    ws.close(config.closeCode, config.closeReason);
  }

  function maybeDone() {
    if (!config.waitForClose && received >= config.expect && sentAll) {
      close();
    }
  }

  function sendFrom(index) {
    if (index >= config.messages.length) {
      sentAll = true;
      maybeDone();
      return;
    }
    if (ws.readyState !== WS.OPEN) {
      return;
    }
    const data = h.messageData(config.messages[index], config.seed, index);
    const binary = h.isBinarySpec(config.messages[index]);
    const summary = Object.assign(h.describe(data, binary), { index: index });
    const next = function () {
      if (config.sendDelayMs) {
        setTimeout(function () { sendFrom(index + 1); }, config.sendDelayMs);
      } else {
        sendFrom(index + 1);
      }
    };
    ws.send(data, { binary: binary }, function (err) {
      if (err) {
        h.emit('error', Object.assign({ where: 'send', index: index }, h.errorFields(err)));
        return;
      }
      h.emit('sent', Object.assign({ buffered_amount: ws.bufferedAmount }, summary));
      if (!config.burst) {
        next();
      }
    });
    if (config.burst) {
      next();
    }
  }

  ws.on('unexpected-response', function (req, res) {
    answered = true;
    h.emit('upgrade-failed', {
      status: res.statusCode,
      status_message: res.statusMessage,
      headers: res.headers,
    });
    res.resume();
    req.abort();
    h.exit(h.EXIT_OK);
  });

  ws.on('open', function () {
    opened = true;
    answered = true;
    h.emit('open', { url: config.uri, protocol: ws.protocol || null });
    config.readers.opened(ws, fields);
    sendFrom(0);
  });

  ws.on('message', function (data, flags) {
    const binary = Boolean(flags && flags.binary);
    h.emit('message', Object.assign(h.describe(data, binary), { index: received }));
    received += 1;
    config.readers.received(ws, fields);
    maybeDone();
  });

  ws.on('close', function (code, reason) {
    if (!opened) {
      if (!answered) {
        h.exit(h.EXIT_NETWORK);
      }
      return;
    }
    h.emit('close', { code: code, reason: reason ? String(reason) : '', received: received });
    h.exit(h.EXIT_OK);
  });

  ws.on('error', function (err) {
    h.emit('error', Object.assign({ where: opened ? 'socket' : 'connect' }, h.errorFields(err)));
  });

  h.listenForCommands({
    pause: function () { config.readers.pause(ws, fields, 'command'); },
    resume: function () { config.readers.resumeAll(); },
    close: close,
  });
}

h.run(NAME, main);
