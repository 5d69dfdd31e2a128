// The npm localtunnel client (the library behind `lt`): tunnels requests from the localtunnel server at
// 127.0.0.1:SERVER_PORT to the local server at localhost:LOCAL_PORT, under the subdomain SUBDOMAIN.
// Usage: node lt-client.js SERVER_PORT LOCAL_PORT SUBDOMAIN. Prints "READY <url>" once tunnels are open.
'use strict';

require('./loopback-only');
const localtunnel = require('localtunnel');

const [serverPort, localPort, subdomain] = process.argv.slice(2);
localtunnel({ port: parseInt(localPort, 10), host: `http://127.0.0.1:${serverPort}`, subdomain })
  .then((tunnel) => {
    tunnel.on('error', (err) => console.error(`tunnel error: ${err.message}`));
    console.log(`READY ${tunnel.url}`);
  })
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
process.on('SIGTERM', () => process.exit(0));
