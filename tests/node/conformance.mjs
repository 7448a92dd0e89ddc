// Conformance of leviathan's /graphql/ws with the graphql-ws npm client.
//
//   node conformance.mjs <host:port> <token>
//
// The server must run with `--token <token>` and a fresh state file. Prints
// one line per check and exits non-zero on the first failure.

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import assert from 'node:assert/strict';

const [addr, token] = process.argv.slice(2);
if (!addr || !token) {
  console.error('usage: node conformance.mjs <host:port> <token>');
  process.exit(2);
}
const wsUrl = `ws://${addr}/graphql/ws`;
let passed = 0;

function ok(what) {
  passed += 1;
  console.log(`ok ${passed} - ${what}`);
}

async function gql(query, variables = {}) {
  const resp = await fetch(`http://${addr}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await resp.json();
  assert.equal(body.errors, undefined, JSON.stringify(body));
  return body.data;
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

/** Takes `n` results from an iterator. */
async function take(iterator, n, what) {
  const out = [];
  while (out.length < n) {
    const { value, done } = await withTimeout(iterator.next(), 10000, what);
    if (done) throw new Error(`${what}: ended after ${out.length} results`);
    out.push(value);
  }
  return out;
}

function client(params) {
  const closes = [];
  const c = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: params,
    retryAttempts: 0,
    lazy: true,
    on: { closed: (event) => closes.push(event.code) },
  });
  return { c, closes };
}

async function main() {
  const { c } = client({ token });

  // 1. The change feed: events in revision order, exactly those committed.
  const rev0 = (await gql('{ revision }')).revision;
  const changes = c.iterate({
    query: 'subscription($since: Int) { changes(since: $since) { revision mutation items { kind id op } } }',
    variables: { since: rev0 },
  });
  await gql('mutation { cenCreate(input: {id: "cen1"}) { revision } }');
  await gql('mutation { containerJoinCen(input: {containerId: "c1", cenId: "cen1"}) { revision } }');
  await gql('mutation { containerSetTag(input: {id: "c1", tag: "web"}) { revision } }');
  const evs = await take(changes, 3, 'changes');
  assert.deepEqual(evs.map((e) => e.data.changes.revision), [rev0 + 1, rev0 + 2, rev0 + 3]);
  assert.deepEqual(evs.map((e) => e.data.changes.mutation), ['cenCreate', 'containerJoinCen', 'containerSetTag']);
  assert.deepEqual(evs[0].data.changes.items, [{ kind: 'CEN', id: 'cen1', op: 'CREATE' }]);
  assert.deepEqual(evs[2].data.changes.items, [{ kind: 'CONTAINER', id: 'c1', op: 'UPDATE' }]);
  ok('changes(since) delivers each committed revision once, in order');
  await changes.return();

  // 2. Resume: a new subscription replays after a revision, then goes live.
  const resumed = c.iterate({
    query: 'subscription($since: Int) { changes(since: $since) { revision } }',
    variables: { since: rev0 + 1 },
  });
  const replayed = await take(resumed, 2, 'replay');
  await gql('mutation { cenCreate(input: {id: "cen2"}) { revision } }');
  const live = await take(resumed, 1, 'live after replay');
  assert.deepEqual([...replayed, ...live].map((e) => e.data.changes.revision), [rev0 + 2, rev0 + 3, rev0 + 4]);
  ok('changes(since) replays the log then follows live, no gap, no duplicate');
  await resumed.return();

  // 3. The CIN monitor: state first, then create / update / delete.
  await gql('mutation { cinImport(input: {cins: [{id: "cin1", cenIds: ["cen1"]}]}) { revision } }');
  const mon = c.iterate({
    query: 'subscription { cinMonitor(cinId: "cin1") { kind members { containerId hostId address tag } } }',
  });
  const [state] = await take(mon, 1, 'monitor state');
  assert.deepEqual(state.data.cinMonitor, {
    kind: 'STATE',
    members: [{ containerId: 'c1', hostId: 'host1', address: '10.10.0.10', tag: 'web' }],
  });
  await gql('mutation { containerJoinCen(input: {containerId: "c2", cenId: "cen1"}) { revision } }');
  await gql('mutation { containerSetTag(input: {id: "c2", tag: "db"}) { revision } }');
  await gql('mutation { containerLeaveCen(input: {containerId: "c1", cenId: "cen1"}) { revision } }');
  const mevs = await take(mon, 3, 'monitor events');
  assert.deepEqual(
    mevs.map((e) => [e.data.cinMonitor.kind, e.data.cinMonitor.members.map((m) => [m.containerId, m.address, m.tag])]),
    [
      ['CREATE', [['c2', '10.10.0.11', null]]],
      ['UPDATE', [['c2', '10.10.0.11', 'db']]],
      ['DELETE', [['c1', '10.10.0.10', 'web']]],
    ],
  );
  ok('cinMonitor sends STATE, then CREATE, UPDATE, DELETE');
  await mon.return();

  // 4. Errors: a resolver error is a result carrying extensions.code; a
  //    document the schema refuses is the protocol's `error` message.
  const missing = c.iterate({ query: 'subscription { cinMonitor(cinId: "nope") { kind } }' });
  const [nf] = await take(missing, 1, 'not found');
  assert.equal(nf.errors[0].extensions.code, 'NOT_FOUND');
  assert.equal((await missing.next()).done, true);
  ok('unknown CIN: NOT_FOUND, then complete');
  const invalid = c.iterate({ query: 'subscription { changes { nope } }' });
  await assert.rejects(
    withTimeout(invalid.next(), 10000, 'validation error'),
    (errors) => Array.isArray(errors) && errors[0].extensions.code === 'BAD_REQUEST',
  );
  ok('invalid document: error message with BAD_REQUEST');
  await c.dispose();

  // 5. Authorization: the token in connectionParams, or the connection is
  //    closed with 4401 (which the client treats as fatal).
  for (const params of [{ token: 'wrong' }, {}]) {
    const { c: bad, closes } = client(params);
    const it = bad.iterate({ query: 'subscription { changes { revision } }' });
    await assert.rejects(withTimeout(it.next(), 10000, 'unauthorized'), (e) => e && e.code === 4401);
    assert.deepEqual(closes, [4401]);
    await bad.dispose();
  }
  ok('missing or wrong token: closed with 4401');
  const { c: bearer } = client({ Authorization: `Bearer ${token}` });
  const [r] = await take(bearer.iterate({ query: '{ revision }' }), 1, 'bearer');
  assert.equal(r.data.revision, rev0 + 8);
  await bearer.dispose();
  ok('Authorization: Bearer in connectionParams is accepted');

  console.log(`${passed} passed, 0 failed`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error('FAILED:', e && e.stack ? e.stack : e);
    console.log(`${passed} passed, 1 failed`);
    process.exit(1);
  },
);
