// The graphql-ws npm client over wss:// with tokens of two roles.
//
//   NODE_EXTRA_CA_CERTS=ca.crt node tls.mjs <host:port> <viewer token> <editor token> <editor name>
//
// The server runs with --tls-cert/--tls-key (a certificate of the test's CA)
// and a --tokens file holding both tokens. Checks: a viewer subscribes to
// `changes` over wss://; a change an editor makes over https:// reaches it
// with the editor's name as its actor; a viewer's mutation over the same
// websocket is refused with FORBIDDEN naming the editor role. Prints one
// line per check and exits non-zero on the first failure.

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import assert from 'node:assert/strict';

const [addr, viewer, editor, editorName] = process.argv.slice(2);
if (!addr || !viewer || !editor || !editorName) {
  console.error('usage: node tls.mjs <host:port> <viewer token> <editor token> <editor name>');
  process.exit(2);
}
let passed = 0;
function ok(what) {
  passed += 1;
  console.log(`ok ${passed} - ${what}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]);
}

const client = createClient({
  url: `wss://${addr}/graphql/ws`,
  webSocketImpl: WebSocket,
  connectionParams: { token: viewer },
  retryAttempts: 0,
});

// 1. The viewer's subscription over wss:// sees the editor's change.
const events = [];
let seen;
const arrived = new Promise((resolve) => (seen = resolve));
const stop = client.subscribe(
  { query: 'subscription { changes { revision mutation actor atMs items { kind id op } } }' },
  {
    next: (v) => {
      events.push(v);
      seen();
    },
    error: (e) => {
      console.error('subscription error', JSON.stringify(e));
      process.exit(1);
    },
    complete: () => {},
  },
);
// The subscription is live once the server has acknowledged it; a query
// over the same connection answers after that.
await withTimeout(
  new Promise((resolve, reject) =>
    client.subscribe({ query: '{ revision }' }, { next: () => {}, error: reject, complete: resolve }),
  ),
  30000,
  'a query over wss://',
);
ok('a viewer connects over wss:// and queries');

const resp = await fetch(`https://${addr}/graphql`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${editor}` },
  body: JSON.stringify({ query: 'mutation { cenCreate(input: {id: "over-wss"}) { revision } }' }),
});
assert.equal(resp.status, 200);
const made = await resp.json();
assert.equal(made.errors, undefined, JSON.stringify(made));
ok('an editor creates a CEN over https://');

await withTimeout(arrived, 30000, 'the change event');
const ev = events[0].data.changes;
assert.equal(ev.mutation, 'cenCreate');
assert.equal(ev.actor, editorName);
assert.ok(ev.atMs > 0, JSON.stringify(ev));
assert.deepEqual(ev.items, [{ kind: 'CEN', id: 'over-wss', op: 'CREATE' }]);
ok(`the viewer sees the change, made by ${editorName}`);

// 2. The viewer's mutation over the websocket is refused.
const refused = await withTimeout(
  new Promise((resolve) =>
    client.subscribe(
      { query: 'mutation { cenDelete(input: {id: "over-wss"}) { revision } }' },
      { next: (v) => resolve({ next: v }), error: (e) => resolve({ error: e }), complete: () => {} },
    ),
  ),
  30000,
  'the refusal of a mutation',
);
assert.ok(refused.error, JSON.stringify(refused));
assert.equal(refused.error[0].extensions.code, 'FORBIDDEN', JSON.stringify(refused));
assert.match(refused.error[0].message, /editor/);
ok('a viewer mutation over wss:// is refused with FORBIDDEN');

stop();
await client.dispose();
console.log(`all ${passed} checks passed`);
