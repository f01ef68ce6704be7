'use strict';
// s3rver for the benchmark: counts the requests of the measured systems by kind.
//
// usage: NODE_PATH=tests/node/node_modules node s3rver_counting.js ADDRESS DIRECTORY SERVICE_ENDPOINT
//
// Two ports, one server (same store, same handlers):
// - the MEASURED port (printed as "S3rver listening on ADDRESS:PORT", as s3rver's own CLI does):
//   every request there is counted, by kind (see kind() below);
// - the CONTROL port (printed as "control port PORT"): the bench's own seeding, checks and polls,
//   never counted.
// GET /__bench/counts on either port answers the counters as JSON (not counted itself).
// S3rver 3.x extends Koa: the counting middleware is put first (app.middleware.unshift) before
// run() composes the middleware stack. Requests are expected in path style (/bucket/key).

const http = require('http');
const S3rver = require('s3rver');

const [address, directory, serviceEndpoint] = process.argv.slice(2);
const KINDS = ['HEAD', 'GET', 'LIST', 'PUT', 'COPY', 'PART', 'POST', 'DELETE', 'OTHER'];
const counts = Object.fromEntries(KINDS.map(k => [k, 0]));
let controlPort = -1;

function kind(ctx) {
  const rest = ctx.path.replace(/^\/+/, '');
  const slash = rest.indexOf('/');
  const hasKey = slash >= 0 && slash < rest.length - 1;
  const q = ctx.query;
  switch (ctx.method) {
    case 'HEAD':
      return 'HEAD';
    case 'GET':
      return hasKey ? 'GET' : 'LIST';
    case 'PUT':
      if (!hasKey) return 'OTHER';
      if (ctx.get('x-amz-copy-source')) return 'COPY';
      return 'partNumber' in q ? 'PART' : 'PUT';
    case 'POST':
      if (!hasKey) return 'delete' in q ? 'DELETE' : 'OTHER';
      return 'POST';
    case 'DELETE':
      return 'DELETE';
    default:
      return 'OTHER';
  }
}

const server = new S3rver({
  address,
  port: 0,
  directory,
  serviceEndpoint,
  silent: true,
});
server.middleware.unshift(async (ctx, next) => {
  if (ctx.path === '/__bench/counts') {
    ctx.type = 'application/json';
    ctx.body = JSON.stringify(counts);
    return;
  }
  if (ctx.req.socket.localPort !== controlPort) counts[kind(ctx)] += 1;
  await next();
});

(async () => {
  const control = http.createServer(server.callback());
  await new Promise((resolve, reject) => {
    control.once('error', reject);
    control.listen(0, address, resolve);
  });
  controlPort = control.address().port;
  const { port } = await server.run();
  console.log('control port %d', controlPort);
  console.log('S3rver listening on %s:%d', address, port);
})().catch(err => {
  console.error(err);
  process.exit(1);
});
