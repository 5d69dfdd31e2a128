#!/usr/bin/env node
// A hyco-ws@1.0.5 listener (the official, unmodified npm package) for relay's end-to-end tests.
//
// It registers on a Hybrid Connection with createRelayedServer and serves every WebSocket sender
// the relay announces: echo, sink, close after N messages, or reject. Everything it observes is
// reported as JSON lines on stdout (see lib/harness.js); run with --help for the options.
//
// What the library does by itself and what this script adds:
//   * control channel, accept handling, rendezvous upgrade, reconnects: the library, untouched;
//   * observing: an extra 'message' listener on the library's control channel reports each raw
//     control message (accept, or anything else) before the library handles it;
//   * reject: hyco-ws has no working reject (its abortConnection() references an undefined
//     WebSocketClient and crashes), so --behaviour reject does what the protocol prescribes instead:
//     it intercepts the accept and upgrades to its address plus sb-hc-statusCode/-Description,
//     using the WebSocket client the package exports (ws 1.1.5). The library never sees that accept.

'use strict';

const path = require('path');
const WS = require('hyco-ws');
const h = require('./lib/harness');

const NAME = path.basename(__filename);

const USAGE = `
Usage: node ${NAME} (--uri URI | --namespace NS --path HC) TOKEN [options]

A hyco-ws listener. Reports JSON lines on stdout:
  starting, token, online, offline, accept, control, connection, open, message, closing, close,
  rejected, paused, resumed, error, closed, fatal

Endpoint:
  --uri URI              listener URI written by hand, e.g.
                         ws://127.0.0.1:9080/$hc/hyco?sb-hc-action=listen
                         wss://localhost:9443/$hc/hyco?sb-hc-action=listen
  --namespace NS --path HC
                         use the library helper createRelayListenUri(NS, HC)
                         (always wss://NS:443/$hc/HC?sb-hc-action=listen)
${h.TOKEN_USAGE}  --token-mode MODE      string (default; never renewed) or function (the library
                         calls it at each connect and hourly to send renewToken)
  --renew-interval-ms MS shorten the library's one-hour renewal timer to MS (function mode)

Behaviour for each accepted sender:
  --behaviour B          echo (default: send each message back, text as text, binary as
                         binary), sink (read only), or reject
  --close-after N        close the connection after the N-th received message
  --close-code CODE      close code for --close-after (default 1000)
  --close-reason TEXT    close reason for --close-after (default empty)
  --reject-status CODE   status for --behaviour reject (default 401)
  --reject-description T description for --behaviour reject (default "Rejected by listener")
  --reject-style STYLE   sb-hc (default: sb-hc-statusCode/sb-hc-statusDescription) or plain
                         (statusCode/statusDescription, as the library's dead code would)
${h.READER_USAGE}
Other:
  --timeout-ms MS        exit with code 3 after MS milliseconds (default: run until killed)
  -h, --help             show this text

Stdin commands (one JSON object per line, when RELAY_HARNESS_STDIN=1):
  {"command":"pause"}    stop reading on every open connection
  {"command":"resume"}   resume every paused connection
  {"command":"close"}    server.close(): close connections and the control channel, then exit
  {"command":"exit"}     exit at once

TLS: the library takes no TLS options; trust a development CA with NODE_EXTRA_CA_CERTS=ca.pem.
`;

const OPTIONS = Object.assign(
  {
    uri: { type: 'string' },
    namespace: { type: 'string' },
    path: { type: 'string' },
    behaviour: { type: 'string' },
    'close-after': { type: 'string' },
    'close-code': { type: 'string' },
    'close-reason': { type: 'string' },
    'reject-status': { type: 'string' },
    'reject-description': { type: 'string' },
    'reject-style': { type: 'string' },
    'timeout-ms': { type: 'string' },
  },
  h.TOKEN_OPTIONS,
  h.READER_OPTIONS
);

const BEHAVIOURS = ['echo', 'sink', 'reject'];

function settings(values) {
  const behaviour = values.behaviour || 'echo';
  if (!BEHAVIOURS.includes(behaviour)) {
    throw new h.UsageError('--behaviour must be one of ' + BEHAVIOURS.join(', ') + ', not ' + JSON.stringify(behaviour));
  }
  const rejectStyle = values['reject-style'] || 'sb-hc';
  if (rejectStyle !== 'sb-hc' && rejectStyle !== 'plain') {
    throw new h.UsageError('--reject-style must be sb-hc or plain, not ' + JSON.stringify(rejectStyle));
  }
  const closeAfter = h.integer(values, 'close-after', 1, undefined);
  if (closeAfter !== undefined && behaviour === 'reject') {
    throw new h.UsageError('--close-after makes no sense with --behaviour reject');
  }
  const uri = h.endpointChoice(values) === 'uri'
    ? values.uri
    : WS.createRelayListenUri(values.namespace, values.path);
  return {
    uri: uri,
    behaviour: behaviour,
    closeAfter: closeAfter,
    closeCode: h.integer(values, 'close-code', 1000, 1000),
    closeReason: values['close-reason'] || '',
    rejectStatus: h.integer(values, 'reject-status', 100, 401),
    rejectDescription: values['reject-description'] !== undefined ? values['reject-description'] : 'Rejected by listener',
    rejectStyle: rejectStyle,
    readers: new h.Readers(h.readerPolicy(values)),
    timeoutMs: h.integer(values, 'timeout-ms', 1, undefined),
  };
}

/** Upgrade to the accept address with reject parameters; the relay should answer 410. */
function reject(config, accept) {
  const names = config.rejectStyle === 'plain'
    ? ['statusCode', 'statusDescription']
    : ['sb-hc-statusCode', 'sb-hc-statusDescription'];
  const address = accept.address + (accept.address.indexOf('?') === -1 ? '?' : '&') +
    names[0] + '=' + config.rejectStatus + '&' + names[1] + '=' + encodeURIComponent(config.rejectDescription);
  const fields = { id: accept.id, status: config.rejectStatus, description: config.rejectDescription };
  let reported = false;
  const ws = new WS(address, null, { perMessageDeflate: false });
  ws.on('unexpected-response', function (req, res) {
    reported = true;
    h.emit('rejected', Object.assign({ relay_status: res.statusCode, relay_status_message: res.statusMessage }, fields));
    res.resume();
    req.abort();
  });
  ws.on('open', function () {
    reported = true;
    h.emit('error', Object.assign({ where: 'reject', message: 'the relay completed a reject upgrade (101)' }, fields));
    ws.close();
  });
  ws.on('error', function (err) {
    if (!reported) {
      reported = true;
      h.emit('error', Object.assign({ where: 'reject' }, fields, h.errorFields(err)));
    }
  });
}

function main() {
  const values = h.parseCommandLine(NAME, USAGE, OPTIONS, process.argv.slice(2));
  const config = settings(values);
  let server = null;
  const isOpen = function () {
    return server !== null && server.controlChannel && server.controlChannel.readyState === WS.OPEN;
  };
  const token = h.listenerToken(values, h.tokenSource(values, config.uri, WS.createRelayToken), isOpen);
  h.watchdog(config.timeoutMs);

  let onlineCount = 0;
  let connectionCount = 0;
  let pendingAccept = null;
  const open = new Map();

  // The library handles an accept synchronously: it emits 'connection' from inside its control
  // channel message handler. The observer below runs first and leaves the accept for that handler.
  function observeControl(data, flags) {
    const text = Buffer.isBuffer(data) ? data.toString('utf8') : String(data);
    let message = null;
    try {
      message = flags && flags.binary ? null : JSON.parse(text);
    } catch (err) {
      message = null;
    }
    if (message && message.accept) {
      pendingAccept = message.accept;
      h.emit('accept', {
        id: message.accept.id,
        address: message.accept.address,
        connect_headers: message.accept.connectHeaders,
        remote_endpoint: message.accept.remoteEndpoint === undefined ? null : message.accept.remoteEndpoint,
      });
    } else {
      const summary = h.describe(data, Boolean(flags && flags.binary));
      summary.text = summary.type === 'text' ? text.slice(0, 4096) : undefined;
      h.emit('control', summary);
    }
  }

  function onConnection(client) {
    const accept = pendingAccept;
    pendingAccept = null;
    const conn = { conn: ++connectionCount, id: accept ? accept.id : null };
    let received = 0;
    h.emit('connection', Object.assign({ url: client.url }, conn));
    client.on('open', function () {
      open.set(client, conn);
      h.emit('open', Object.assign({
        url: client.url,
        protocol: client.protocol || null,
        headers: accept ? accept.connectHeaders : null,
      }, conn));
      config.readers.opened(client, conn);
    });
    client.on('message', function (data, flags) {
      const binary = Boolean(flags && flags.binary);
      h.emit('message', Object.assign(h.describe(data, binary), { index: received }, conn));
      received += 1;
      if (config.behaviour === 'echo' && client.readyState === WS.OPEN) {
        client.send(data, { binary: binary });
      }
      if (config.closeAfter !== undefined && received === config.closeAfter) {
        h.emit('closing', Object.assign({ code: config.closeCode, reason: config.closeReason }, conn));
        client.close(config.closeCode, config.closeReason);
      } else {
        config.readers.received(client, conn);
      }
    });
    client.on('close', function (code, reason) {
      open.delete(client);
      config.readers.forget(client);
      h.emit('close', Object.assign({ code: code, reason: reason ? String(reason) : '' }, conn));
    });
    client.on('error', function (err) {
      h.emit('error', Object.assign({ where: 'rendezvous' }, conn, h.errorFields(err)));
    });
  }

  h.emit('starting', { uri: config.uri });
  server = WS.createRelayedServer({ server: config.uri, token: token }, onConnection);

  server.on('listening', function () {
    const channel = server.controlChannel;
    if (config.behaviour === 'reject') {
      const libraryHandler = channel.onmessage;
      channel.onmessage = function (event) {
        const message = JSON.parse(event.data);
        if (message && message.accept) {
          reject(config, message.accept);
          return;
        }
        libraryHandler.call(this, event);
      };
    }
    channel.prependListener('message', observeControl);
    channel.on('close', function (code, reason) {
      h.emit('offline', { code: code, reason: reason ? String(reason) : '' });
    });
    onlineCount += 1;
    h.emit('online', { count: onlineCount, uri: config.uri });
  });

  // Without an 'error' listener EventEmitter would throw; the library reconnects by itself.
  server.on('error', function (err) {
    h.emit('error', Object.assign({ where: 'control' }, h.errorFields(err)));
  });

  server.on('close', function () {
    h.emit('closed', {});
    h.exit(h.EXIT_OK);
  });

  h.listenForCommands({
    pause: function () {
      for (const [client, conn] of open) {
        config.readers.pause(client, conn, 'command');
      }
    },
    resume: function () {
      config.readers.resumeAll();
    },
    close: function () {
      server.close();
    },
  });
}

h.run(NAME, main);
