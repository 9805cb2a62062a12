// One worker of the signing ceiling: RSA-2048 / SHA-256 signatures of a ~170-byte message in a tight loop, then
// verifications of a signature (what the gateway does to each answer) for a third of that time.
// Started by run.js with workerData { pem, ms }; posts { signatures, ms, verifications, verifyMs } back.
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto'
import { parentPort, workerData } from 'node:worker_threads'

const key = createPrivateKey(workerData.pem)
// The shape of a real request message (docs/wechatpay.md §3): method, target, timestamp, nonce, body.
const message = Buffer.from('POST\n/v3/payscore/partner/serviceorder/1234323JKHDFE1243252/pay\n1700000000\n' +
  '593BEC0C930BF1AFEB40B4A08C8FB242\n{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}\n')

for (let i = 0; i < 50; i++) sign('sha256', message, key) // warm-up
let signatures = 0
const start = performance.now()
let now = start
while (now - start < workerData.ms) {
  for (let i = 0; i < 20; i++) sign('sha256', message, key)
  signatures += 20
  now = performance.now()
}
const signMs = now - start

const publicKey = createPublicKey(key)
const signature = sign('sha256', message, key)
let verifications = 0
const verifyStart = performance.now()
now = verifyStart
while (now - verifyStart < workerData.ms / 3) {
  for (let i = 0; i < 50; i++) verify('sha256', message, publicKey, signature)
  verifications += 50
  now = performance.now()
}
parentPort.postMessage({ signatures, ms: signMs, verifications, verifyMs: now - verifyStart, messageBytes: message.length })
