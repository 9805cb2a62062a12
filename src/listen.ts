/**
 * A listen failure, said as the setting to change (the gateway's PORT and NOTIFY_PORT, the sandbox's SANDBOX_PORT),
 * or undefined when it is not one a setting can fix.
 */
export function listenProblem (err: NodeJS.ErrnoException, portSetting: string, hostSetting: string, host: string, port: number): string | undefined {
  if (err.code === 'EADDRINUSE') return `${portSetting}: port ${port} on ${host} is already in use by another process; set ${portSetting} to a free port`
  if (err.code === 'EACCES') return `${portSetting}: port ${port} needs privileges this process lacks; use a port above 1023`
  if (err.code === 'EADDRNOTAVAIL') return `${hostSetting}: ${host} is not an address of this machine`
  return undefined
}
