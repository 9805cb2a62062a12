import t from 'tap'
import { randomHex } from '../src/random.js'

t.test('random hex from a pool: the length asked, never repeated across refills', async t => {
  const seen = new Set<string>()
  for (let i = 0; i < 3000; i++) {
    const id = randomHex(16)
    if (!/^[0-9a-f]{32}$/.test(id)) t.fail(id)
    seen.add(id)
  }
  t.equal(seen.size, 3000, '3000 ids across several refills of the 4 KiB pool, all different')
  t.match(randomHex(8), /^[0-9a-f]{16}$/)
})
