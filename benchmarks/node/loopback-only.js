// Refuse any outgoing TCP connection that is not to a loopback address, and bind listening sockets that
// name no address to 127.0.0.1. localtunnel's server and client default to public hosts (the client to
// localtunnel.me, the server's tunnel ports to every interface); the benchmark points both at 127.0.0.1,
// and this makes sure nothing else is reached or exposed if a default slips through.
'use strict';

const net = require('net');
const dns = require('dns');

dns.setDefaultResultOrder('ipv4first'); // "localhost" is 127.0.0.1, where the upstream listens

function isLoopback(host) {
  return host === undefined || host === 'localhost' || host === '::1' || /^127\./.test(host);
}

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const options = typeof args[0] === 'object' && args[0] !== null ? args[0] : { host: args[1] };
  const host = Array.isArray(options) ? undefined : options.host;
  if (options.path === undefined && !isLoopback(host)) {
    throw new Error(`loopback-only: refusing to connect to ${host}`);
  }
  return connect.apply(this, args);
};

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length === 0 || typeof args[0] === 'function') {
    args.unshift(0, '127.0.0.1');
  } else if (typeof args[0] === 'number' && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
