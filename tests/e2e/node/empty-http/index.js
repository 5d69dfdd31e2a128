// Intentionally empty: require('http') resolves to Node's core module, never to this file.
// hyco-ws@1.0.5 declares a dependency on an npm package named "http" with no published
// versions; package.json maps it here via "overrides" so that `npm ci` succeeds.
'use strict';
module.exports = {};
