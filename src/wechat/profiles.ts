import { gatewayError, validationError, type FieldIssue } from '../errors.js'
import type { MerchantProfile, MerchantType } from './profile.js'

const KIND: Record<MerchantType, string> = { direct: 'direct merchant (普通商户)', partner: 'service provider (服务商)' }

/** Where a call names its merchant: the WeChat field (`mchid` / `sp_mchid`), in the body or the query string. */
export interface MerchantChoice {
  type: MerchantType
  field: string
  location: FieldIssue['location']
  /** The merchant id the caller sent, if any. */
  value: string | undefined
  /** The profiles the caller may use (undefined: all). */
  allowed: readonly string[] | undefined
  caller: string
}

/** Every merchant profile of the gateway: looked up by name, and chosen for a call. */
export class MerchantProfiles {
  private readonly byNames: Map<string, MerchantProfile>

  constructor (readonly all: readonly MerchantProfile[]) {
    this.byNames = new Map(all.map(p => [p.name, p]))
  }

  byName (name: string): MerchantProfile | undefined {
    return this.byNames.get(name)
  }

  /**
   * The profile a call uses: the one whose merchant id the caller named, or, when it named none, the only profile of
   * the operation's kind that the caller may use. Anything else is a 400 naming the field and the ids it may take
   * (nothing is sent), or a 403 when the caller may not use that merchant.
   */
  select (choice: MerchantChoice): MerchantProfile {
    const { type, field, location, value, allowed, caller } = choice
    const mayUse = (p: MerchantProfile): boolean => allowed === undefined || allowed.includes(p.name)
    const ofType = this.all.filter(p => p.serves(type))
    const ids = (profiles: readonly MerchantProfile[]): string => profiles.map(p => `${p.mchid} (${p.name})`).join(', ') || 'none configured'
    const refuse = (issue: string): never => { throw validationError([{ location, field: `/${field}`, issue }]) }
    if (value === undefined) {
      const usable = ofType.filter(mayUse)
      if (usable.length === 1) return usable[0] as MerchantProfile
      if (usable.length === 0 && ofType.length > 0) {
        throw gatewayError('FORBIDDEN', `Caller ${caller} may not use any ${KIND[type]} profile of this gateway`)
      }
      return refuse(usable.length === 0
        ? `required: this gateway has no ${KIND[type]} profile for this operation`
        : `required: this gateway holds several ${KIND[type]} profiles; send one of ${ids(usable)}`)
    }
    const named = ofType.find(p => p.mchid === value)
    if (named === undefined) {
      // Only profiles the caller may use are named to it.
      const other = this.all.find(p => p.mchid === value && mayUse(p))
      const usable = ofType.filter(mayUse)
      const choices = usable.length > 0 || allowed === undefined ? ids(usable) : 'none this caller may use'
      return refuse(other !== undefined
        ? `${value} is the profile ${other.name}, not a ${KIND[type]}, which this operation needs; one of ${choices}`
        : `unknown merchant id ${value.slice(0, 32)}: one of ${choices}`)
    }
    if (!mayUse(named)) throw gatewayError('FORBIDDEN', `Caller ${caller} may not use merchant ${named.name}`)
    return named
  }

  close (): void {
    for (const profile of this.all) profile.close()
  }
}
