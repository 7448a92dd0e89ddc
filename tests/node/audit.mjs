// The graphql-http audit suite (GraphQL over HTTP conformance) against a
// running server: node audit.mjs http://127.0.0.1:PORT/graphql
// Prints every result; exits 1 on any warning or error.
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs URL');
  process.exit(2);
}
let bad = 0;
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  if (result.status !== 'ok') {
    bad += 1;
    console.log(`${result.status.toUpperCase()} ${result.id} ${result.name}: ${result.reason}`);
  } else {
    console.log(`ok ${result.id} ${result.name}`);
  }
}
console.log(bad === 0 ? 'audit: 0 warnings, 0 errors' : `audit: ${bad} not ok`);
process.exit(bad === 0 ? 0 : 1);
