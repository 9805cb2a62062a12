import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { checkSubscriberMerchants, loadSubscribers, matches } from '../../src/notifications/subscribers.js'

const SECRET = 'x'.repeat(32)

async function file (t: Test, content: unknown, extra: Record<string, string> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'subscribers-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  for (const [name, text] of Object.entries(extra)) await writeFile(join(dir, name), text)
  const path = join(dir, 'subscribers.json')
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content))
  return path
}

t.test('a subscribers file: secrets from files next to it, patterns, merchants', async t => {
  const path = await file(t, [
    { name: 'billing', url: 'https://billing.internal/wechatpay', events: ['PAYSCORE.*', 'ENTRUST.TERMINATE'], merchants: ['partner'], secret_file: 'billing.secret' },
    { name: 'audit', url: 'http://audit:8080/in', events: ['*'], secret: SECRET }
  ], { 'billing.secret': `${'b'.repeat(40)}\n` })
  const problems: string[] = []
  const warnings: string[] = []
  const [billing, audit] = loadSubscribers(path, ['direct', 'partner'], problems, warnings)
  t.same(problems, [])
  t.match(warnings, [/\[0\] \(billing\)\.secret_file: .*billing\.secret can be read by other users \(mode 0644\)/], 'a secret file others may read is worth a warning')
  t.notMatch(warnings.join(), /bbbb/, 'never the secret')
  t.same(billing, { name: 'billing', url: 'https://billing.internal/wechatpay', events: ['PAYSCORE.*', 'ENTRUST.TERMINATE'], merchants: ['partner'], secret: 'b'.repeat(40) })
  t.ok(billing !== undefined && matches(billing, 'partner', 'PAYSCORE.USER_PAID'))
  t.notOk(billing !== undefined && matches(billing, 'direct', 'PAYSCORE.USER_PAID'), 'another merchant')
  t.notOk(billing !== undefined && matches(billing, 'partner', 'PAYSCOREX.USER_PAID'), 'a prefix ends at a dot')
  t.notOk(billing !== undefined && matches(billing, 'partner', 'ENTRUST.SIGN'))
  t.ok(audit !== undefined && matches(audit, 'direct', 'ANYTHING.AT_ALL'))
})

t.test('every problem is named, and no secret appears in a message', async t => {
  const path = await file(t, [
    { name: 'Billing', url: 'ftp://x', events: [], secret: 'short' },
    { name: 'ok', url: 'http://a/', events: ['PAYSCORE.*.X'], secret: SECRET },
    { name: 'dup', url: 'http://a/', events: ['*'], merchants: ['nobody'], secret: SECRET, secret_file: 'f' },
    { name: 'dup', url: 'http://a/', events: ['*'], secret_file: 'missing' },
    { name: 'weak', url: 'http://a/', events: ['*'], secret: 'too-short-secret' }
  ])
  const problems: string[] = []
  loadSubscribers(path, ['direct'], problems)
  t.ok(problems.some(p => /\[0\]\.name: must be 1-32 of a-z/.test(p)), problems.join('\n'))
  t.ok(problems.some(p => /\[0\]\.url: must be an http\(s\) URL/.test(p)))
  t.ok(problems.some(p => /\[0\]\.events: /.test(p)))
  t.ok(problems.some(p => /\[1\]\.events\[0\]: must be an event type/.test(p)))
  const second: string[] = []
  loadSubscribers(await file(t, [
    { name: 'dup', url: 'http://a/', events: ['*'], merchants: ['nobody'], secret: SECRET, secret_file: 'f' },
    { name: 'dup', url: 'http://a/', events: ['*'], secret_file: 'missing' },
    { name: 'weak', url: 'http://a/', events: ['*'], secret: 'too-short-secret' }
  ]), ['direct'], second)
  t.match(second, [
    /\[0\] \(dup\)\.merchants: nobody is not a merchant profile \(direct\)/,
    /\[0\] \(dup\): set exactly one of secret_file \(recommended\) and secret/,
    /\[1\] \(dup\): the name is used twice/,
    /\[1\] \(dup\)\.secret_file .*missing: cannot be read \(ENOENT\)/,
    /\[2\] \(weak\): the secret must have at least 32 characters/
  ])
  t.notOk([...problems, ...second].some(p => p.includes('too-short-secret') || p.includes(SECRET)))
  const broken: string[] = []
  loadSubscribers(await file(t, '{not json'), [], broken)
  t.match(broken, [/cannot be read as JSON/])
  t.same(checkSubscriberMerchants([{ name: 'a', url: 'http://a/', events: ['*'], merchants: ['x'], secret: SECRET }], ['direct']),
    ['NOTIFY_SUBSCRIBERS_FILE (a).merchants: x is not a merchant profile (direct)'])
})
