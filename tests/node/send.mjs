// Drives Segment's own analytics-node SDK, unmodified, against a Segment-compatible host.
// Usage: SEGMENT_HOST=http://127.0.0.1:PORT SEGMENT_WRITE_KEY=KEY node send.mjs < calls.json
// calls.json: [["track", {...}], ["identify", {...}], ...]; exits 1 if the SDK reports an error.
import { Analytics } from '@segment/analytics-node'
import { readFileSync } from 'node:fs'

const calls = JSON.parse(readFileSync(0, 'utf8'))
// Only the host and the write key are configured: the one-line switch a shop makes.
const analytics = new Analytics({
  writeKey: process.env.SEGMENT_WRITE_KEY,
  host: process.env.SEGMENT_HOST,
})
const errors = []
analytics.on('error', (err) => errors.push(String(err?.reason ?? err?.code ?? err)))
for (const [method, params] of calls) analytics[method](params)
await analytics.closeAndFlush({ timeout: 30000 })
if (errors.length) {
  console.error(JSON.stringify(errors))
  process.exit(1)
}
console.log(JSON.stringify({ sent: calls.length }))
