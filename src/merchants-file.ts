import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import { readApiv3Key } from './wechat/keys.js'
import type { KeyMode, MerchantConfig } from './wechat/profile.js'

/**
 * WECHATPAY_MERCHANTS_FILE: the merchant profiles of one gateway, as a JSON list (mounted as a secret or a config
 * map). Key files are named relative to the JSON file's folder unless absolute. Every problem is reported at once,
 * naming the profile and the field, never a secret.
 */

export const MERCHANT_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/

const hexSerial = z.string().regex(/^[0-9A-Fa-f]{1,64}$/, 'must be the hexadecimal serial of the merchant API certificate')
const file = z.string().trim().min(1, 'must name a file')
const httpUrl = z.url({ protocol: /^https?$/ }).transform(u => u.replace(/\/+$/, ''))

const profileSchema = z.strictObject({
  name: z.string().regex(MERCHANT_NAME, 'must be 1-32 of a-z 0-9 _ -, starting with a letter or digit'),
  type: z.enum(['direct', 'partner']),
  mchid: z.string().regex(/^[0-9]{1,32}$/, 'must be 1-32 digits'),
  appid: z.string().regex(/^[0-9A-Za-z_-]{1,32}$/, 'must be 1-32 letters, digits, _ or -').optional(),
  merchant_serial: hexSerial,
  private_key_file: file,
  merchant_cert_file: file.optional(),
  key_mode: z.enum(['public-key', 'certificate', 'migration']).optional(),
  public_key_id: z.string().regex(/^PUB_KEY_ID_[0-9A-Za-z]+$/, 'must look like PUB_KEY_ID_0112...').optional(),
  public_key_file: file.optional(),
  apiv3_key_file: file.optional(),
  base_url: httpUrl.optional(),
  backup_base_url: httpUrl.optional()
})

type ProfileJson = z.infer<typeof profileSchema>

export interface Defaults {
  baseUrl: string
  backupBaseUrl?: string | undefined
}

/** The key mode a profile's keys imply when it does not say: both kinds of key is the migration (docs/wechatpay.md §5). */
export function impliedKeyMode (publicKey: boolean, apiv3Key: boolean): KeyMode | undefined {
  if (publicKey && apiv3Key) return 'migration'
  if (publicKey) return 'public-key'
  if (apiv3Key) return 'certificate'
  return undefined
}

/** Checks that the key mode has its keys; returns the problems, each starting with `where`. */
export function keyModeProblems (where: string, mode: KeyMode | undefined, has: { publicKey: boolean, apiv3Key: boolean },
  names: { publicKey: string, apiv3Key: string, keyMode: string }): string[] {
  if (mode === undefined) {
    return [`${where}no way to verify WeChat Pay's answers: set ${names.publicKey} (public-key mode), ${names.apiv3Key} (platform-certificate mode), or both (migration)`]
  }
  const problems: string[] = []
  if (mode !== 'certificate' && !has.publicKey) problems.push(`${where}${names.keyMode} ${mode} needs ${names.publicKey}`)
  if (mode !== 'public-key' && !has.apiv3Key) problems.push(`${where}${names.keyMode} ${mode} needs ${names.apiv3Key}`)
  return problems
}

function toConfig (json: ProfileJson, index: number, folder: string, defaults: Defaults, problems: string[]): MerchantConfig | undefined {
  const where = `merchants[${index}] (${json.name})`
  const path = (p: string): string => isAbsolute(p) ? p : resolve(folder, p)
  const field = (name: string): string => `${where}.${name}`
  const local: string[] = []
  if ((json.public_key_id === undefined) !== (json.public_key_file === undefined)) {
    local.push(`${where}: public_key_id and public_key_file go together: set both or neither`)
  }
  if (json.public_key_id !== undefined && json.public_key_id === json.merchant_serial) {
    local.push(`${where}: public_key_id equals merchant_serial: the merchant's own key cannot verify WeChat Pay's answers`)
  }
  const has = { publicKey: json.public_key_id !== undefined, apiv3Key: json.apiv3_key_file !== undefined }
  const keyMode = json.key_mode ?? impliedKeyMode(has.publicKey, has.apiv3Key)
  local.push(...keyModeProblems(`${where}: `, keyMode, has, { publicKey: 'public_key_id + public_key_file', apiv3Key: 'apiv3_key_file', keyMode: 'key_mode' }))
  const apiv3Key = json.apiv3_key_file !== undefined ? readApiv3Key(path(json.apiv3_key_file), field('apiv3_key_file'), local) : undefined
  problems.push(...local)
  if (local.length > 0 || keyMode === undefined) return undefined
  const backupBaseUrl = json.backup_base_url ?? defaults.backupBaseUrl
  return {
    name: json.name,
    types: [json.type],
    mchid: json.mchid,
    ...(json.appid !== undefined && { appid: json.appid }),
    merchantSerial: json.merchant_serial.toUpperCase(),
    privateKeyFile: path(json.private_key_file),
    ...(json.merchant_cert_file !== undefined && { merchantCertFile: path(json.merchant_cert_file) }),
    keyMode,
    ...(json.public_key_id !== undefined && { publicKeyId: json.public_key_id }),
    ...(json.public_key_file !== undefined && { publicKeyFile: path(json.public_key_file) }),
    ...(apiv3Key !== undefined && { apiv3Key }),
    ...(json.apiv3_key_file !== undefined && { apiv3KeyFile: path(json.apiv3_key_file) }),
    baseUrl: json.base_url ?? defaults.baseUrl,
    ...(backupBaseUrl !== undefined && { backupBaseUrl }),
    labels: {
      privateKeyFile: field('private_key_file'),
      merchantCertFile: field('merchant_cert_file'),
      merchantSerial: field('merchant_serial'),
      publicKeyFile: field('public_key_file'),
      apiv3Key: field('apiv3_key_file')
    }
  }
}

/** Reads and checks a merchants file; `problems` gets every problem, each prefixed by the setting's name. */
export function loadMerchantsFile (file: string, defaults: Defaults, problems: string[], setting = 'WECHATPAY_MERCHANTS_FILE'): MerchantConfig[] {
  const found: string[] = []
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    problems.push(`${setting}: ${code !== undefined ? `cannot read ${file} (${code})` : `${file} is not JSON (${(err as Error).message})`}`)
    return []
  }
  const parsed = z.array(z.unknown()).min(1, 'must list at least one merchant profile').safeParse(raw)
  if (!parsed.success) {
    problems.push(`${setting}: ${file} must be a JSON list of merchant profiles`)
    return []
  }
  const profiles: MerchantConfig[] = []
  for (const [i, entry] of parsed.data.entries()) {
    const result = profileSchema.safeParse(entry)
    if (!result.success) {
      const name = typeof (entry as { name?: unknown })?.name === 'string' ? ` (${(entry as { name: string }).name.slice(0, 32)})` : ''
      for (const issue of result.error.issues) {
        const key = (issue as { keys?: string[] }).keys
        const path = key !== undefined ? key.join(', ') : issue.path.join('.')
        found.push(`merchants[${i}]${name}.${path}: ${key !== undefined ? 'unknown field' : issue.message}`)
      }
      continue
    }
    const config = toConfig(result.data, i, dirname(resolve(file)), defaults, found)
    if (config !== undefined) profiles.push(config)
  }
  const seen = (pick: (p: MerchantConfig) => string, what: string): void => {
    const counts = new Map<string, number>()
    for (const p of profiles) counts.set(pick(p), (counts.get(pick(p)) ?? 0) + 1)
    for (const [value, n] of counts) if (n > 1) found.push(`${what} ${value} is used by ${n} profiles: each must be unique`)
  }
  seen(p => p.name, 'the name')
  seen(p => p.mchid, 'the merchant id')
  problems.push(...found.map(f => `${setting}: ${f}`))
  return profiles
}
