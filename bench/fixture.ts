/**
 * The foreign nat tables the bench loads: what Docker writes on a host publishing many
 * ports. Rules are written the way iptables-save prints them, so a save of the loaded
 * table reads back the same lines.
 */
export const DOCKER_CHAINS_PREAMBLE = [':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', ':DOCKER - [0:0]'];

/** IPv4: Docker's PREROUTING/OUTPUT/POSTROUTING rules plus `published` DNAT rules in DOCKER. */
export function dockerNat4(published: number): string {
  const lines = [
    '*nat',
    ...DOCKER_CHAINS_PREAMBLE,
    '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER',
    '-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER',
    '-A POSTROUTING -s 172.18.0.0/16 ! -o docker_gwbridge -j MASQUERADE',
    '-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE',
    '-A DOCKER -i docker_gwbridge -j RETURN',
    '-A DOCKER -i docker0 -j RETURN',
  ];
  for (let i = 0; i < published; i++) {
    // Container addresses 172.17.0.2 .. 172.17.39.251: 250 per /24, never .0/.1/.255.
    const addr = `172.17.${Math.floor(i / 250)}.${(i % 250) + 2}`;
    lines.push(`-A DOCKER ! -i docker0 -p tcp -m tcp --dport ${10000 + i} -j DNAT --to-destination ${addr}:80`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** IPv6: what Docker 27+ sets up by default (ip6tables on), without published ports. */
export function dockerNat6(): string {
  return [
    '*nat',
    ...DOCKER_CHAINS_PREAMBLE,
    '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER',
    '-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER',
    '-A POSTROUTING -s fd00:dead:beef::/64 ! -o docker0 -j MASQUERADE',
    '-A DOCKER -i docker0 -j RETURN',
    'COMMIT',
    '',
  ].join('\n');
}

/** Number of `-A` lines in a save or restore text. */
export function countRules(text: string, chain?: string): number {
  const prefix = chain === undefined ? '-A ' : `-A ${chain} `;
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith(prefix)) n++;
  return n;
}
