import { validate } from '@readme/openapi-parser'
import t from 'tap'
import { GATEWAY_ERRORS } from '../src/errors.js'
import { operations } from '../src/wechat/operations.js'
import { secretsOf, testGateway } from './helpers.js'

t.test('the OpenAPI document is valid and documents every route, field and error', async t => {
  const { app, sandbox } = await testGateway(t)
  await app.ready()
  const doc = app.swagger() as Record<string, any>
  const result = await validate(structuredClone(doc) as never)
  t.equal(result.valid, true, JSON.stringify((result as { errors?: unknown }).errors ?? ''))
  t.equal(doc.openapi, '3.0.3')
  t.same(Object.keys(doc.paths).sort(), [
    '/contracts/{contract_id}/fail-notify',
    '/notifications',
    '/notifications/{merchant}/{id}',
    '/notifications/{merchant}/{id}/redeliver',
    '/papay/sign/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}',
    '/papay/sign/partner/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}',
    '/partner/contracts/{contract_id}/notify',
    '/payscore/partner/serviceorder',
    '/payscore/partner/serviceorder/{out_order_no}/pay'
  ], 'the operations, the queries and the notifications\' operator API: health and docs routes are hidden')

  for (const op of operations) {
    const path = op.route.replace(/:(\w+)/g, '{$1}')
    t.same(Object.keys(doc.paths[path]), [op.method.toLowerCase()], `${path}: ${op.method} only`)
    const route = doc.paths[path][op.method.toLowerCase()]
    t.equal(route.operationId, op.id)
    t.match(route.summary, /[\u4e00-\u9fff].* \/ [A-Za-z]/, 'summary in Chinese and English')
    t.same(route.security, [{ bearer: [] }])
    const errors = ['400', '401', '403', '404', '408', '409', '413', '415', '422', '429', '431', '500', '502', '503', '504']
    t.same(Object.keys(route.responses).sort(), [String(op.successStatus), ...errors].sort())
    for (const status of ['400', '502', '504']) t.ok(route.responses[status].content['application/json'].schema, `${status} documented`)
    for (const param of route.parameters) {
      t.match(param.description, /[\u4e00-\u9fff].*\/ [A-Za-z]/, `${param.name} described in both languages`)
      // Swagger UI sends an example value on every "Try it out": a fixed Idempotency-Key would make the second try a replay.
      if (param.in === 'header') t.equal(param.schema.example, undefined, `${param.name}: no example a browser would send by default`)
      else if (param.required === true) t.ok(param.schema.example, `${param.name} has an example`)
    }
    for (const code of Object.keys(GATEWAY_ERRORS).filter(c => c !== 'ROUTE_NOT_FOUND' && c !== 'METHOD_NOT_ALLOWED' && c !== 'NOTIFICATION_NOT_FOUND')) {
      t.ok(Object.values(route.responses).some((r: any) => r.description.includes(`\`${code}\``)), `${op.id}: ${code} is documented`)
    }
    if (op.method === 'POST') {
      t.equal(route.responses['204'].content, undefined, '204 has no body')
      t.ok(route.parameters.some((p: any) => p.name === 'idempotency-key'), 'operations take an Idempotency-Key')
      const body = route.requestBody.content['application/json'].schema
      t.ok(body.example, 'the body has an example')
      for (const [name, field] of Object.entries(body.properties as Record<string, { description?: string }>)) {
        t.match(field.description, /[\u4e00-\u9fff]/, `${op.id}.${name} is described`)
      }
    } else {
      t.equal(route.requestBody, undefined, 'a query has no body')
      t.notOk(route.parameters.some((p: any) => p.name === 'idempotency-key'), 'a query takes no Idempotency-Key')
      const answer = route.responses['200'].content['application/json'].schema
      t.ok(op.relied.every(field => answer.required.includes(field)), `${op.id}: the fields callers rely on are required`)
      t.ok(answer.example, `${op.id}: the answer has an example`)
      t.ok(op.answer.safeParse(answer.example).success, `${op.id}: the example is a valid answer`)
      t.not(answer.additionalProperties, false, 'WeChat Pay may add fields')
      const inQuery = route.parameters.filter((p: any) => p.in === 'query').map((p: any) => p.name)
      t.ok(inQuery.includes(op.merchant.field), `${op.id}: the merchant is chosen by ${op.merchant.field} in the query`)
    }
  }
  const notify = doc.paths['/partner/contracts/{contract_id}/notify'].post.requestBody.content['application/json'].schema
  t.same(notify.required, ['sub_mchid', 'estimated_amount'], 'merchant fields are optional for callers')
  t.equal(notify.additionalProperties, false)
  t.same(Object.keys(doc.components.schemas).sort(), ['Error', 'NotificationRecord'], 'shared components, and nothing unused is listed')
  t.same(doc.paths['/notifications/{merchant}/{id}/redeliver'].post.security, [{ bearer: [] }])
  t.same(doc.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: 'A caller token from GATEWAY_TOKENS' })

  const text = JSON.stringify(doc)
  for (const secret of [...secretsOf(sandbox), ...sandbox.merchants.all.map(m => m.ids.merchant_serial)]) t.notOk(text.includes(secret), 'no secret or key id in the document')
})

t.test('/docs serves Swagger UI and /docs/json the document; both can be switched off', async t => {
  const { app } = await testGateway(t)
  const ui = await app.inject({ method: 'GET', url: '/docs/' })
  t.equal(ui.statusCode, 200)
  t.match(ui.body, /swagger-ui/i)
  const json = await app.inject({ method: 'GET', url: '/docs/json' })
  t.equal(json.json().info.title, 'WeChat Pay v3 gateway')
  const { app: closed } = await testGateway(t, { config: { docs: false } })
  t.equal((await closed.inject({ method: 'GET', url: '/docs/json' })).statusCode, 404)
})
