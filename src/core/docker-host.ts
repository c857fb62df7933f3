/**
 * Why `text` cannot be the Docker API address the agent connects to, or null.
 * src/shell/docker.ts parses the same text with `new URL` when the agent starts (and
 * on every reload): whatever passes here must not make it throw, nor connect somewhere
 * other than what the operator wrote.
 */
export function dockerHostProblem(text: string): string | null {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'is not a URL';
  }
  if (url.protocol === 'ssh:') return "uses ssh://, which is not supported: run imds-guard on the Docker host itself";
  if (url.search !== '' || url.hash !== '') return 'has a query or fragment, which a Docker address cannot use';
  if (url.username !== '' || url.password !== '') return 'has a user or password, which is not used: TLS comes from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH';
  if (url.protocol === 'unix:') {
    // unix://var/run/docker.sock parses with host "var": a relative path in disguise.
    if (url.host !== '') return 'must be unix:// followed by an absolute path (unix:///var/run/docker.sock)';
    if (url.pathname.length < 2 || url.pathname.endsWith('/')) return 'must name a socket file (unix:///var/run/docker.sock)';
    // The path goes to connect() as written: a %-escape would be taken literally.
    if (/[%\0\n\r]/.test(url.pathname)) return 'has a socket path with %, a NUL or a newline';
    return null;
  }
  if (url.protocol === 'tcp:' || url.protocol === 'http:' || url.protocol === 'https:') {
    if (url.hostname === '') return 'must name a host (tcp://HOST:PORT)';
    // The URL parser already refuses ports above 65535; 0 is no port to connect to.
    if (url.port === '0') return 'has port 0; give a port from 1 to 65535';
    if (url.pathname !== '' && url.pathname !== '/') return 'has a path, which a tcp:// Docker address cannot use';
    return null;
  }
  return "must be unix:///PATH or tcp://HOST:PORT of this host's Docker";
}
