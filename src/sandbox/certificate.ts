import { sign, type KeyObject } from 'node:crypto'

/**
 * A self-signed X.509 v3 certificate (RSA, SHA-256), DER-encoded by hand. Node can parse certificates but not
 * make them; the libraries that can pull a dozen packages and a global polyfill for what the sandbox needs twice
 * on its first start. Node's `X509Certificate` parses the output in the tests.
 */

function length (n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const bytes: number[] = []
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

const tlv = (tag: number, ...content: Buffer[]): Buffer => {
  const body = Buffer.concat(content)
  return Buffer.concat([Buffer.from([tag]), length(body.length), body])
}
const sequence = (...content: Buffer[]): Buffer => tlv(0x30, ...content)
const oid = (hex: string): Buffer => tlv(0x06, Buffer.from(hex, 'hex'))

const SHA256_WITH_RSA = sequence(oid('2a864886f70d01010b'), Buffer.from([0x05, 0x00]))
const ATTRIBUTE = { CN: '550403', O: '55040a', C: '550406' } as const

function name (parts: Record<keyof typeof ATTRIBUTE, string>): Buffer {
  return sequence(...(Object.keys(ATTRIBUTE) as Array<keyof typeof ATTRIBUTE>).map(k =>
    tlv(0x31, sequence(oid(ATTRIBUTE[k]), tlv(k === 'C' ? 0x13 : 0x0c, Buffer.from(parts[k], 'utf8'))))))
}

function time (date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z' // YYYYMMDDHHMMSSZ
  return date.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2))) : tlv(0x18, Buffer.from(iso))
}

/** A DER INTEGER is signed: a serial whose first bit is set needs a leading zero byte to stay positive. */
function serialNumber (hex: string): Buffer {
  const bytes = Buffer.from(hex.length % 2 === 0 ? hex : `0${hex}`, 'hex')
  return (bytes[0] ?? 0) >= 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes
}

export interface CertificateSpec {
  /** Hexadecimal serial number, as WeChat Pay writes them (any first digit). */
  serial: string
  commonName: string
  notBefore: Date
  notAfter: Date
  publicKey: KeyObject
  privateKey: KeyObject
}

export function selfSignedCertificate (spec: CertificateSpec): string {
  const subject = name({ C: 'CN', O: 'WeChat Pay sandbox', CN: spec.commonName })
  const tbs = sequence(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))), // version: v3
    tlv(0x02, serialNumber(spec.serial)),
    SHA256_WITH_RSA,
    subject, // issuer: self-signed
    sequence(time(spec.notBefore), time(spec.notAfter)),
    subject,
    spec.publicKey.export({ type: 'spki', format: 'der' })
  )
  const signature = sign('sha256', tbs, spec.privateKey)
  const der = sequence(tbs, SHA256_WITH_RSA, tlv(0x03, Buffer.from([0]), signature))
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END CERTIFICATE-----\n`
}
