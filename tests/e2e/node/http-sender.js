#!/usr/bin/env node
// An HTTP sender for relay's end-to-end tests: plain Node http/https, exactly what the hyco-https
// samples use (the package has no sender code of its own; it re-exports Node's https module).
//
// It sends one or more requests in sequence over one keep-alive connection (so follow-up
// requests reuse the socket, like a browser or curl would), with a deterministic body, and
// reports status, headers, body length and SHA-256 as JSON lines on stdout (see lib/harness.js).
// Run with --help for the options.

'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');
const tls = require('tls');
const hycoHttps = require('hyco-https');
const h = require('./lib/harness');

const NAME = path.basename(__filename);

const USAGE = `
Usage: node ${NAME} (--url URL ... | --namespace NS --path PATH) [options]

Plain Node http/https requests to a relay. Reports JSON lines on stdout:
  response, error, timeout, fatal
Exit code 0 when every request got a response (whatever its status), 1 otherwise.

Target:
  --url URL              request URL (repeatable: one request per URL, in order), e.g.
                         http://127.0.0.1:9080/hyco/api?x=1  or  https://localhost:9443/hyco
  --namespace NS --path PATH
                         use hyco-https' createRelayHttpsUri(NS, PATH) = https://NS/PATH
  --count N              send the whole list N times (default 1)
${h.TOKEN_USAGE}  --token-in WHERE       header (default: ServiceBusAuthorization), query (sb-hc-token),
                         or authorization (the Authorization header)

Request:
  --method METHOD        request method (default GET, or POST when there is a body)
  --header "N: V"        request header (repeatable)
  --body-text TEXT       body as UTF-8 text
  --body-size N          body of N deterministic bytes; request i (0-based, counting all
                         requests) carries payload("binary", N, seed, i)
  --body-kind KIND       binary (default: as above) or bulk (the AES-CTR bulk payload of
                         lib/harness.js, generated while it is sent, with back-pressure: for
                         bodies of hundreds of megabytes)
  --seed SEED            payload seed (default "relay")
  --chunked              send the body with Transfer-Encoding: chunked, in --chunk-size pieces
  --chunk-size N         piece size for --chunked (default 16384)
  --chunk-delay-ms MS    pause between pieces (default 0)
  --new-connection       a fresh TCP connection per request (default: one keep-alive socket)
  --parallel             send all requests at once, each on its own connection (implies
                         --new-connection); responses are reported as they complete
  --ca FILE              for https, trust this CA file plus Node's bundled roots (replaces the
                         default store, so NODE_EXTRA_CA_CERTS no longer applies)

Responses are hashed as they arrive (their first 4096 bytes are kept for "text"); each response
line also reports what was sent: sent_length and sent_sha256.

Other:
  --timeout-ms MS        per-request timeout (default 120000)
  -h, --help             show this text
`;

const OPTIONS = Object.assign(
  {
    url: { type: 'string', multiple: true },
    namespace: { type: 'string' },
    path: { type: 'string' },
    count: { type: 'string' },
    'token-in': { type: 'string' },
    method: { type: 'string' },
    header: { type: 'string', multiple: true },
    'body-text': { type: 'string' },
    'body-size': { type: 'string' },
    seed: { type: 'string' },
    chunked: { type: 'boolean' },
    'chunk-size': { type: 'string' },
    'chunk-delay-ms': { type: 'string' },
    'new-connection': { type: 'boolean' },
    parallel: { type: 'boolean' },
    'body-kind': { type: 'string' },
    ca: { type: 'string' },
    'timeout-ms': { type: 'string' },
  },
  h.TOKEN_OPTIONS
);

function settings(values) {
  for (const key of ['token-mode', 'renew-interval-ms']) {
    if (values[key] !== undefined) {
      throw new h.UsageError('--' + key + ' is for listeners');
    }
  }
  const hasUrl = values.url !== undefined;
  const hasNamespace = values.namespace !== undefined || values.path !== undefined;
  if (hasUrl === hasNamespace) {
    throw new h.UsageError('give either --url, or --namespace and --path');
  }
  if (hasNamespace && (values.namespace === undefined || values.path === undefined)) {
    throw new h.UsageError('--namespace and --path go together');
  }
  const urls = hasUrl ? values.url : [hycoHttps.createRelayHttpsUri(values.namespace, values.path)];
  for (const url of urls) {
    let parsed;
    try {
      parsed = new URL(url);
    } catch (err) {
      throw new h.UsageError('bad --url ' + JSON.stringify(url) + ': ' + err.message);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new h.UsageError('--url must be http:// or https://, not ' + JSON.stringify(url));
    }
  }
  const tokenIn = values['token-in'] || 'header';
  if (!['header', 'query', 'authorization'].includes(tokenIn)) {
    throw new h.UsageError('--token-in must be header, query or authorization, not ' + JSON.stringify(tokenIn));
  }
  const bodySize = h.integer(values, 'body-size', 0, undefined);
  if (bodySize !== undefined && values['body-text'] !== undefined) {
    throw new h.UsageError('give --body-text or --body-size, not both');
  }
  const hasBody = bodySize !== undefined || values['body-text'] !== undefined;
  const bodyKind = values['body-kind'] || 'binary';
  if (bodyKind !== 'binary' && bodyKind !== 'bulk') {
    throw new h.UsageError('--body-kind must be binary or bulk, not ' + JSON.stringify(bodyKind));
  }
  if (bodyKind === 'bulk' && bodySize === undefined) {
    throw new h.UsageError('--body-kind bulk needs --body-size');
  }
  if (values.chunked && !hasBody) {
    throw new h.UsageError('--chunked needs --body-text or --body-size');
  }
  let ca = null;
  if (values.ca !== undefined) {
    try {
      ca = fs.readFileSync(values.ca);
    } catch (err) {
      throw new h.UsageError('cannot read --ca ' + values.ca + ': ' + err.message);
    }
  }
  return {
    urls: urls,
    count: h.integer(values, 'count', 1, 1),
    // One token for the whole run, scoped to the first URL unless --token-uri says otherwise.
    token: tokenOnce(h.tokenSource(values, urls[0], hycoHttps.createRelayToken)),
    tokenIn: tokenIn,
    method: values.method || (hasBody ? 'POST' : 'GET'),
    headers: h.headers(values.header),
    bodyText: values['body-text'],
    bodySize: bodySize,
    bodyKind: bodyKind,
    seed: values.seed !== undefined ? values.seed : 'relay',
    chunked: Boolean(values.chunked),
    chunkSize: h.integer(values, 'chunk-size', 1, 16384),
    chunkDelayMs: h.integer(values, 'chunk-delay-ms', 0, 0),
    newConnection: Boolean(values['new-connection']) || Boolean(values.parallel),
    parallel: Boolean(values.parallel),
    ca: ca,
    timeoutMs: h.integer(values, 'timeout-ms', 1, 120000),
  };
}

function tokenOnce(source) {
  return source === null ? null : source.next();
}

function requestBody(config, index) {
  if (config.bodySize !== undefined && config.bodyKind === 'bulk') {
    return { bulk: true, length: config.bodySize };
  }
  if (config.bodySize !== undefined) {
    return h.payload('binary', config.bodySize, config.seed, index);
  }
  if (config.bodyText !== undefined) {
    return Buffer.from(config.bodyText, 'utf8');
  }
  return null;
}

/** The pieces of a body, in --chunk-size pieces. */
function* pieces(body, config, index) {
  if (body.bulk) {
    yield* h.bulkChunks(body.length, config.seed, index, config.chunkSize);
    return;
  }
  for (let offset = 0; offset < body.length; offset += config.chunkSize) {
    yield body.subarray(offset, offset + config.chunkSize);
  }
}

/** Write a body piece by piece, waiting for 'drain' when the socket is full; digest what was sent. */
function writePieces(req, body, config, index, sent) {
  const source = pieces(body, config, index);
  const step = function () {
    for (;;) {
      const next = source.next();
      if (next.done) {
        req.end();
        return;
      }
      sent.update(next.value);
      const more = req.write(next.value);
      if (config.chunkDelayMs) {
        setTimeout(step, config.chunkDelayMs);
        return;
      }
      if (!more) {
        req.once('drain', step);
        return;
      }
    }
  };
  step();
}

function send(config, agents, url, index, done) {
  const target = new URL(url);
  const headers = Object.assign({}, config.headers);
  if (config.token !== null) {
    if (config.tokenIn === 'header') {
      headers.ServiceBusAuthorization = config.token;
    } else if (config.tokenIn === 'authorization') {
      headers.Authorization = config.token;
    } else {
      target.searchParams.append('sb-hc-token', config.token);
    }
  }
  const body = requestBody(config, index);
  if (body !== null && !config.chunked) {
    headers['Content-Length'] = String(body.length);
  }
  const sent = new h.Digest();
  const secure = target.protocol === 'https:';
  const options = {
    method: config.method,
    headers: headers,
    // --new-connection: agent false = a one-off agent, so a new TCP (and TLS) connection each time.
    agent: config.newConnection ? false : (secure ? agents.https : agents.http),
    timeout: config.timeoutMs,
  };
  if (secure && config.ca) {
    options.ca = [config.ca].concat(tls.rootCertificates);
  }
  const req = (secure ? https : http).request(target, options, function (res) {
    // Read now: by the 'end' event the socket has gone back to the agent.
    const localPort = res.socket ? res.socket.localPort : null;
    const received = new h.Digest(4096);
    res.on('data', function (chunk) { received.update(chunk); });
    res.on('end', function () {
      const summary = received.finish();
      const sentSummary = sent.finish();
      const line = {
        index: index,
        url: target.toString(),
        method: config.method,
        status: res.statusCode,
        status_message: res.statusMessage,
        headers: res.headers,
        raw_headers: res.rawHeaders,
        length: summary.length,
        sha256: summary.sha256,
        // Equal local ports across responses mean the keep-alive connection was reused.
        local_port: localPort,
        sent_length: sentSummary.length,
        sent_sha256: sentSummary.sha256,
      };
      if (summary.text !== undefined) {
        line.text = summary.text;
      }
      h.emit('response', line);
      done(true);
    });
    res.on('error', function (err) {
      h.emit('error', Object.assign({ index: index, where: 'response' }, h.errorFields(err)));
      done(false);
    });
  });
  req.on('timeout', function () {
    req.destroy(new Error('no response within ' + config.timeoutMs + ' ms'));
  });
  req.on('error', function (err) {
    h.emit('error', Object.assign({ index: index, where: 'request' }, h.errorFields(err)));
    done(false);
  });
  if (body === null) {
    req.end();
  } else if (config.chunked || body.bulk) {
    writePieces(req, body, config, index, sent);
  } else {
    sent.update(body);
    req.end(body);
  }
}

function main() {
  const values = h.parseCommandLine(NAME, USAGE, OPTIONS, process.argv.slice(2));
  const config = settings(values);
  const agentOptions = { keepAlive: true, maxSockets: 1 };
  const agents = {
    http: new http.Agent(agentOptions),
    https: new https.Agent(agentOptions),
  };
  const queue = [];
  for (let round = 0; round < config.count; round++) {
    queue.push.apply(queue, config.urls);
  }
  let failures = 0;
  if (config.parallel) {
    let pending = queue.length;
    queue.forEach(function (url, index) {
      let finished = false;
      send(config, agents, url, index, function (ok) {
        if (finished) {
          return;
        }
        finished = true;
        if (!ok) {
          failures += 1;
        }
        pending -= 1;
        if (pending === 0) {
          h.exit(failures ? h.EXIT_NETWORK : h.EXIT_OK);
        }
      });
    });
    return;
  }
  const next = function (index) {
    if (index >= queue.length) {
      agents.http.destroy();
      agents.https.destroy();
      h.exit(failures ? h.EXIT_NETWORK : h.EXIT_OK);
      return;
    }
    let finished = false;
    send(config, agents, queue[index], index, function (ok) {
      if (finished) {
        return;
      }
      finished = true;
      if (!ok) {
        failures += 1;
      }
      // Let the agent take the socket back first, so the next request reuses it from the pool.
      setImmediate(next, index + 1);
    });
  };
  next(0);
}

h.run(NAME, main);
