import t from 'tap'
import { afterAttempt, ATTEMPTS_KEPT, type DeliveryState } from '../../src/notifications/relay.js'

t.test('a delivery keeps its latest attempts, bounded however long the retries go on', async t => {
  let state: DeliveryState = { subscriber: 'billing', state: 'pending', attempts: 0 }
  for (let i = 1; i <= 15; i++) state = afterAttempt(state, i < 15 ? { ok: false, ...(i % 2 === 0 ? { status: 500 } : { error: 'TIMEOUT' }) } : { ok: true, status: 204 }, i, new Date(Date.UTC(2026, 11, 2, 0, 0, i)))
  t.equal(state.history?.length, ATTEMPTS_KEPT)
  t.same(state.history?.at(0), { at: '2026-12-02T00:00:06.000Z', status: 500 }, 'the oldest kept is the sixth')
  t.same(state.history?.at(-1), { at: '2026-12-02T00:00:15.000Z', status: 204 })
  t.match(state, { state: 'delivered', attempts: 15, last_status: 204, delivered_at: '2026-12-02T00:00:15.000Z' })
  t.notOk('last_error' in state, 'the last attempt\'s result only')
})
