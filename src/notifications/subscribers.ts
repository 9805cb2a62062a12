import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { z } from 'zod'
import { exposedFile } from '../wechat/keys.js'

/**
 * Who receives which notifications (NOTIFY_SUBSCRIBERS_FILE): internal URLs, each with the event types it wants
 * (`PAYSCORE.*`), optionally only some merchant profiles, and its own secret for the relay's signature.
 */

export interface Subscriber {
  name: string
  url: string
  /** Event type patterns: an exact type, a prefix ending in `.*`, or `*` for all. */
  events: string[]
  /** Merchant profile names; undefined: every profile. */
  merchants?: string[]
  secret: string
}

const MIN_SECRET_LENGTH = 32

const Entry = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'must be 1-32 of a-z 0-9 _ - (it is a metric label)'),
  url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  events: z.array(z.string().regex(/^(\*|[A-Z0-9_]+(\.[A-Z0-9_]+)*(\.\*)?)$/, 'must be an event type, a prefix such as PAYSCORE.*, or *')).min(1),
  merchants: z.array(z.string().min(1)).min(1).optional(),
  secret_file: z.string().min(1).optional(),
  secret: z.string().optional()
})

/** `[0].events[1]`, as a reader finds it in the file. */
function jsonPath (path: PropertyKey[]): string {
  return path.map(p => typeof p === 'number' ? `[${p}]` : `.${String(p)}`).join('').replace(/^\./, '') || '(the file)'
}

export function matches (subscriber: Subscriber, merchant: string, eventType: string): boolean {
  if (subscriber.merchants !== undefined && !subscriber.merchants.includes(merchant)) return false
  return subscriber.events.some(p => p === '*' || p === eventType || (p.endsWith('.*') && eventType.startsWith(p.slice(0, -1))))
}

/**
 * Reads the subscribers file; every problem is pushed to `problems` (secrets never appear in them). `profiles`: the
 * merchant profile names a subscriber may name (undefined: not known yet, see `checkSubscriberMerchants`).
 */
export function loadSubscribers (path: string, profiles: readonly string[] | undefined, problems: string[], warnings: string[] = []): Subscriber[] {
  let json: unknown
  try {
    json = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    problems.push(`NOTIFY_SUBSCRIBERS_FILE ${path}: cannot be read as JSON (${(err as NodeJS.ErrnoException).code ?? 'invalid JSON'})`)
    return []
  }
  const parsed = z.array(Entry).safeParse(json)
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(`NOTIFY_SUBSCRIBERS_FILE ${jsonPath(issue.path)}: ${issue.message}`)
    return []
  }
  const names = new Set<string>()
  const subscribers: Subscriber[] = []
  parsed.data.forEach((entry, i) => {
    const where = `NOTIFY_SUBSCRIBERS_FILE [${i}] (${entry.name})`
    if (names.has(entry.name)) problems.push(`${where}: the name is used twice`)
    names.add(entry.name)
    if (profiles !== undefined) problems.push(...merchantProblems(where, entry.merchants, profiles))
    let secret = entry.secret
    if ((secret === undefined) === (entry.secret_file === undefined)) {
      problems.push(`${where}: set exactly one of secret_file (recommended) and secret`)
    } else if (entry.secret_file !== undefined) {
      const file = resolve(dirname(path), entry.secret_file)
      try {
        secret = readFileSync(file, 'utf8').trim()
        const exposed = exposedFile(file, `${where}.secret_file`)
        if (exposed !== undefined) warnings.push(exposed)
      } catch (err) {
        problems.push(`${where}.secret_file ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
      }
    }
    if (secret !== undefined && secret.length < MIN_SECRET_LENGTH) problems.push(`${where}: the secret must have at least ${MIN_SECRET_LENGTH} characters`)
    if (secret !== undefined) subscribers.push({ name: entry.name, url: entry.url, events: entry.events, ...(entry.merchants !== undefined && { merchants: entry.merchants }), secret })
  })
  return subscribers
}

function merchantProblems (where: string, merchants: readonly string[] | undefined, profiles: readonly string[]): string[] {
  return (merchants ?? []).filter(m => !profiles.includes(m)).map(m => `${where}.merchants: ${m.slice(0, 32)} is not a merchant profile (${profiles.join(', ')})`)
}

/** Subscribers limited to merchant profiles that do not exist, once the profiles are known (sandbox mode). */
export function checkSubscriberMerchants (subscribers: readonly Subscriber[], profiles: readonly string[]): string[] {
  return subscribers.flatMap(s => merchantProblems(`NOTIFY_SUBSCRIBERS_FILE (${s.name})`, s.merchants, profiles))
}
