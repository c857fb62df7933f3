import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flowsToCut, parseConntrackList } from '../../src/core/conntrack-cut.js';

// Captured from `conntrack -L -p tcp --orig-dst 169.254.169.254` in the lab: a container's flow, then the host's own.
const LISTING = `tcp      6 431997 ESTABLISHED src=172.18.0.2 dst=169.254.169.254 sport=39330 dport=80 src=169.254.169.254 dst=169.254.169.1 sport=80 dport=39330 [ASSURED] mark=0 use=1
tcp      6 431997 ESTABLISHED src=169.254.169.1 dst=169.254.169.254 sport=52696 dport=80 src=169.254.169.254 dst=169.254.169.1 sport=80 dport=52696 [ASSURED] mark=0 use=1
tcp      6 118 SYN_SENT src=fd00:dead::2 dst=fd00:ec2::254 sport=40000 dport=80 [UNREPLIED] src=fd00:ec2::254 dst=fd00:ec2::1 sport=80 dport=40000 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.
tcp 6 1 ESTABLISHED src=$(touch) dst=169.254.169.254 sport=1 dport=80`;

test('a conntrack listing yields each flow in its original direction; lines that do not parse are left out', () => {
  assert.deepEqual(parseConntrackList(LISTING), [
    { family: 'ipv4', src: '172.18.0.2', dst: '169.254.169.254', sport: 39330, dport: 80 },
    { family: 'ipv4', src: '169.254.169.1', dst: '169.254.169.254', sport: 52696, dport: 80 },
    { family: 'ipv6', src: 'fd00:dead::2', dst: 'fd00:ec2::254', sport: 40000, dport: 80 },
  ]);
});

test("only flows from containers are cut: one whose source is the host's own address is left alone", () => {
  const cut = flowsToCut(parseConntrackList(LISTING), new Set(['169.254.169.1', '127.0.0.1']));
  assert.deepEqual(cut.map((f) => f.src), ['172.18.0.2', 'fd00:dead::2']);
});
