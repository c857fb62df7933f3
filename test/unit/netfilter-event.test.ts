import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type NetfilterChange, classifyMonitorLine, isNativeChange, parseMonitorLine, parseNftMonitorLine } from '../../src/core/netfilter-event.js';

// Lines captured from `stdbuf -oL xtables-monitor --event` (iptables 1.8.9, Debian 12) in a
// throwaway namespace while iptables-nft, ip6tables-nft, iptables-nft-restore, ebtables-nft,
// arptables-nft and nft changed its tables. Each: the line, what it names, whether it wakes.
const CAPTURED: readonly [line: string, change: NetfilterChange | null, wakes: boolean][] = [
  // iptables -t nat -I PREROUTING -j IMDS-GUARD (an insert is printed as -A)
  [' EVENT: -4 -t nat -A PREROUTING -j IMDS-GUARD', { table: 'nat', chain: 'PREROUTING', family: 'ipv4' }, true],
  // iptables -t nat -I PREROUTING -d 169.254.169.254 -j ACCEPT: the rule that undoes ours
  [' EVENT: -4 -t nat -A PREROUTING -d 169.254.169.254/32 -j ACCEPT', { table: 'nat', chain: 'PREROUTING', family: 'ipv4' }, true],
  // iptables -t nat -D PREROUTING 1
  [' EVENT: -4 -t nat -D PREROUTING -j IMDS-GUARD', { table: 'nat', chain: 'PREROUTING', family: 'ipv4' }, true],
  // iptables -t nat -F IMDS-GUARD: one -D per rule
  [' EVENT: -4 -t nat -D IMDS-GUARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment "imds-guard:abc" -j REDIRECT --to-ports 1', { table: 'nat', chain: 'IMDS-GUARD', family: 'ipv4' }, true],
  [' EVENT: -4 -t nat -A PREROUTING -m comment --comment "a b \\"c\\"" -j RETURN', { table: 'nat', chain: 'PREROUTING', family: 'ipv4' }, true],
  [' EVENT: -4 -t nat -N IMDS-GUARD', { table: 'nat', chain: 'IMDS-GUARD', family: 'ipv4' }, true],
  [' EVENT: -4 -t nat -X IMDS-GUARD', { table: 'nat', chain: 'IMDS-GUARD', family: 'ipv4' }, true],
  // iptables -t nat -E IMDS-GUARD IMDS-GUARD-X: printed as the new name's -N
  [' EVENT: -4 -t nat -N IMDS-GUARD-X', { table: 'nat', chain: 'IMDS-GUARD-X', family: 'ipv4' }, true],
  [' EVENT: -6 -t nat -A PREROUTING -j IMDS-GUARD', { table: 'nat', chain: 'PREROUTING', family: 'ipv6' }, true],
  [' EVENT: -6 -t nat -A OUTPUT -d fd00:ec2::254/128 -j ACCEPT', { table: 'nat', chain: 'OUTPUT', family: 'ipv6' }, true],
  [' EVENT: -4 -t filter -A FORWARD -j ACCEPT', { table: 'filter', chain: 'FORWARD', family: 'ipv4' }, true],
  [' EVENT: -6 -t filter -A FORWARD -j ACCEPT', { table: 'filter', chain: 'FORWARD', family: 'ipv6' }, true],
  // iptables -t raw -A PREROUTING -d 169.254.169.254 -j CT --notrack: skips nat entirely
  [' EVENT: -4 -t raw -A PREROUTING -d 169.254.169.254/32 -j CT --notrack', { table: 'raw', chain: 'PREROUTING', family: 'ipv4' }, true],
  // base chains: created with the table, or a policy change (iptables -P)
  [' EVENT: # nft: ip nat PREROUTING use 1 type nat hook prerouting prio -100 policy accept packets 0 bytes 0 flags 1', { table: 'nat', chain: 'PREROUTING', family: 'ipv4' }, true],
  [' EVENT: # nft: ip filter FORWARD use 2 type filter hook forward prio 0 policy drop packets 0 bytes 0 flags 1', { table: 'filter', chain: 'FORWARD', family: 'ipv4' }, true],
  [' EVENT: # nft: ip6 nat OUTPUT use 1 type nat hook output prio -100 policy accept packets 0 bytes 0 flags 1', { table: 'nat', chain: 'OUTPUT', family: 'ipv6' }, true],
  // tables: iptables-nft creating nat, `nft flush ruleset` deleting it
  [' EVENT: nft: NEW table: table nat ip flags 0 use 1 handle 1', { table: 'nat', chain: null, family: 'ipv4' }, true],
  [' EVENT: nft: DEL table: table nat ip flags 0 use 0 handle 1', { table: 'nat', chain: null, family: 'ipv4' }, true],
  // native nft: a base chain hooked before dstnat in a table of its own, and its rules
  [' EVENT: nft: NEW table: table foo inet flags 0 use 0 handle 2', { table: 'foo', chain: null, family: null }, true],
  [' EVENT: # nft: inet foo pre use 0 type filter hook prerouting prio -300 policy accept packets 0 bytes 0 flags 1', { table: 'foo', chain: 'pre', family: null }, true],
  [' EVENT: # nft: ip bar pre use 0 type nat hook prerouting prio -150 policy accept packets 0 bytes 0 flags 1', { table: 'bar', chain: 'pre', family: 'ipv4' }, true],
  [' EVENT: -4 -t bar -A pre -d 169.254.169.254/32 -p tcp -m tcp --dport 80', { table: 'bar', chain: 'pre', family: 'ipv4' }, true],
  [' EVENT: -6 -t t6 -A c -d fd00:ec2::254/128 -j DROP', { table: 't6', chain: 'c', family: 'ipv6' }, true],
  // `nft add rule inet foo pre ip daddr 169.254.169.254 notrack`: the monitor cannot render it
  [' EVENT: ', { table: null, chain: null, family: null }, true],
  // not ours to watch: other chains of nat and filter, mangle, security, arp, bridge, netdev
  [' EVENT: -4 -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE', { table: 'nat', chain: 'POSTROUTING', family: 'ipv4' }, false],
  [' EVENT: -4 -t nat -A DOCKER -i docker0 -j RETURN', { table: 'nat', chain: 'DOCKER', family: 'ipv4' }, false],
  [' EVENT: -4 -t filter -A FOO -j ACCEPT', { table: 'filter', chain: 'FOO', family: 'ipv4' }, false],
  [' EVENT: -4 -t mangle -A PREROUTING -j ACCEPT', { table: 'mangle', chain: 'PREROUTING', family: 'ipv4' }, false],
  [' EVENT: nft: NEW table: table security ip flags 0 use 1 handle 8', { table: 'security', chain: null, family: 'ipv4' }, false],
  [' EVENT: -4 -t security -A OUTPUT -j ACCEPT', { table: 'security', chain: 'OUTPUT', family: 'ipv4' }, false],
  [' EVENT: nft: NEW table: table filter bridge flags 0 use 1 handle 2', { table: 'filter', chain: null, family: 'other' }, false],
  [' EVENT: # nft: bridge filter FORWARD use 1 type filter hook forward prio -200 policy accept packets 0 bytes 0 flags 1', { table: 'filter', chain: 'FORWARD', family: 'other' }, false],
  [' EVENT: # nft: arp filter INPUT use 1 type filter hook input prio 0 policy accept packets 0 bytes 0 flags 1', { table: 'filter', chain: 'INPUT', family: 'other' }, false],
  [' EVENT: -0 -t filter -A INPUT -j ACCEPT', { table: 'filter', chain: 'INPUT', family: 'other' }, false],
  [' EVENT: nft: NEW table: table nd netdev flags 0 use 0 handle 5', { table: 'nd', chain: null, family: 'other' }, false],
  // end of a transaction, and noise: no change named
  ['NEWGEN: GENID=22 PID=6380 NAME=iptables', null, false],
  ['NEWGEN: GENID=35 PID=6397 NAME=iptables-restor', null, false],
  ['', null, false],
  ['xtables-monitor: something unexpected', null, false],
];

test('every captured xtables-monitor line is parsed to the table, chain and family it names', () => {
  for (const [line, change] of CAPTURED) assert.deepEqual(parseMonitorLine(line), change, line);
});

test('a change to nat, filter or raw PREROUTING/OUTPUT/FORWARD, to our chains, to a native nft table, or one the monitor cannot render wakes the runner; other chains and tables do not', () => {
  for (const [line, change, wakes] of CAPTURED) assert.deepEqual(classifyMonitorLine(line), wakes ? change : null, line);
});

test('a chain whose name only starts like ours (IMDS-GUARD-FWD, a backstop chain) is watched', () => {
  assert.notEqual(classifyMonitorLine(' EVENT: -4 -t filter -A IMDS-GUARD-FWD -j REJECT --reject-with tcp-reset'), null);
  assert.equal(classifyMonitorLine(' EVENT: -4 -t filter -A MY-IMDS-GUARD -j ACCEPT'), null);
});

// Lines captured from `nft monitor` (nftables 1.0.6, Debian 12) while the same tools changed a throwaway namespace.
const NFT_CAPTURED: readonly [line: string, change: NetfilterChange | null, wakes: boolean][] = [
  ['add table ip6 nat', { table: 'nat', chain: null, family: 'ipv6' }, true],
  ['create chain ip6 nat IMDS-GUARD', { table: 'nat', chain: 'IMDS-GUARD', family: 'ipv6' }, true],
  // an IPv6 rule with a tcp match, which xtables-monitor 1.8.9 cannot print (it exits)
  ['add rule ip6 nat IMDS-GUARD iifname "docker0" ip6 daddr fd00:ec2::254 tcp dport 80  counter packets 0 bytes 0 redirect to :1', { table: 'nat', chain: 'IMDS-GUARD', family: 'ipv6' }, true],
  ['add chain ip6 nat PREROUTING { type nat hook prerouting priority dstnat; policy accept; }', { table: 'nat', chain: 'PREROUTING', family: 'ipv6' }, true],
  ['insert rule ip6 nat PREROUTING counter packets 0 bytes 0 jump IMDS-GUARD', { table: 'nat', chain: 'PREROUTING', family: 'ipv6' }, true],
  ['delete rule ip6 nat IMDS-GUARD handle 2', { table: 'nat', chain: 'IMDS-GUARD', family: 'ipv6' }, true],
  ['delete rule ip nat PREROUTING handle 3', { table: 'nat', chain: 'PREROUTING', family: 'ipv4' }, true],
  ['add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }', { table: 'filter', chain: 'FORWARD', family: 'ipv4' }, true],
  ['delete table ip nat', { table: 'nat', chain: null, family: 'ipv4' }, true],
  ['add chain inet foo pre { type filter hook prerouting priority raw; policy accept; }', { table: 'foo', chain: 'pre', family: null }, true],
  ['add rule inet foo pre ip daddr 169.254.169.254 notrack', { table: 'foo', chain: 'pre', family: null }, true],
  ['add rule ip bar pre ip daddr 169.254.169.254 tcp dport 80 dnat to 10.0.0.1', { table: 'bar', chain: 'pre', family: 'ipv4' }, true],
  ['add element inet b s { 1.2.3.4 }', { table: 'b', chain: null, family: null }, true],
  ['add chain ip nat Y', { table: 'nat', chain: 'Y', family: 'ipv4' }, false],
  ['add rule ip nat POSTROUTING ip saddr 172.17.0.0/16 oifname != "docker0" counter packets 0 bytes 0 masquerade', { table: 'nat', chain: 'POSTROUTING', family: 'ipv4' }, false],
  ['add table bridge filter', { table: 'filter', chain: null, family: 'other' }, false],
  ['add rule bridge filter FORWARD counter packets 0 bytes 0 accept', { table: 'filter', chain: 'FORWARD', family: 'other' }, false],
  ['add rule arp filter INPUT arp htype 1 arp hlen 6 arp plen 4 counter packets 0 bytes 0 accept', { table: 'filter', chain: 'INPUT', family: 'other' }, false],
  ['# new generation 4 by process 29623 (ip6tables)', null, false],
  ['', null, false],
];

test('every captured nft monitor line is parsed to the table, chain and family it names, and wakes the runner when it matters', () => {
  for (const [line, change, wakes] of NFT_CAPTURED) {
    assert.deepEqual(parseNftMonitorLine(line), change, line);
    assert.deepEqual(classifyMonitorLine(line, 'nft-monitor'), wakes ? change : null, line);
  }
});

test('the partial line xtables-monitor leaves when it dies on an IPv6 rule counts as a change somewhere', () => {
  assert.deepEqual(classifyMonitorLine(' EVENT: -6 -t nat '), { table: null, chain: null, family: null });
});

test("a change in a table iptables-nft does not make (any inet table, an ip or ip6 table of another name), or one the monitor cannot place, may be in a native table; iptables-nft's own and arp/bridge/netdev are not", () => {
  const native = (line: string): boolean | null => {
    const c = parseNftMonitorLine(line);
    return c === null ? null : isNativeChange(c);
  };
  assert.equal(native('add rule inet evil pre ip daddr 169.254.169.254 notrack'), true);
  assert.equal(native('add table inet nat'), true);
  assert.equal(native('add chain ip6 six pre { type filter hook prerouting priority -200; policy accept; }'), true);
  assert.equal(native('add rule ip nat PREROUTING counter packets 0 bytes 0 jump IMDS-GUARD'), false);
  assert.equal(native('delete rule ip6 raw PREROUTING handle 4'), false);
  assert.equal(native('add rule netdev n ingress drop'), false);
  assert.equal(native('something nft prints that we do not know'), true);
});
