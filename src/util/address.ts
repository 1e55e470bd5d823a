export interface HostPort {
  host: string;
  port: number;
}

/** Parses "host:port", "[v6]:port" or ":port" (host 127.0.0.1). */
export function parseHostPort(text: string, what = 'address'): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`${what} "${text}" is not host:port`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
