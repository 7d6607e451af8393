//! The checker: reads the whole history once the load has stopped and every client
//! has synced to the end, against what Postgres holds.

use crate::faults::Done;
use crate::workload::{ClientLog, Outcome, SendOp, Signal};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A stored message, as the checker reads it.
#[derive(Debug, Clone)]
pub struct Row {
    pub conv: i64,
    pub seq: i64,
    pub sender: i64,
    pub cid: String,
    /// When its transaction ran, in the run's seconds (Postgres's clock, the same
    /// machine's).
    pub stored_at: f64,
}

/// Who is in each conversation of the run.
pub struct Membership {
    /// conv → member user ids (the broadcast's: every client's user).
    pub members: BTreeMap<i64, Vec<i64>>,
}

/// The final read of one client in one conversation, and the unread the server answered.
#[derive(Debug, Clone, Serialize)]
pub struct FinalRead {
    pub user: i64,
    pub conv: i64,
    pub seq: i64,
    /// `unread` of the read's answer.
    pub answered: i64,
    /// Its count in `GET /unread` afterwards.
    pub listed: i64,
}

/// One invariant's result.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub count: u64,
    /// The first offending operations (at most 10).
    pub examples: Vec<String>,
}

impl Check {
    fn new(name: &'static str) -> Check {
        Check {
            name,
            ok: true,
            count: 0,
            examples: Vec::new(),
        }
    }

    fn fail(&mut self, example: String) {
        self.ok = false;
        self.count += 1;
        if self.examples.len() < 10 {
            self.examples.push(example);
        }
    }
}

/// How long a member may sit on a conversation that moved, with no signal, before it
/// counts as silent-stale.
const STALE_AFTER: f64 = 5.0;

pub struct Input<'a> {
    pub clients: &'a [ClientLog],
    /// The broadcaster's sends (sender 0).
    pub notices: &'a [SendOp],
    pub faults: &'a [Done],
    pub rows: &'a [Row],
    pub membership: &'a Membership,
    pub final_reads: &'a [FinalRead],
    pub broadcast_conv: Option<i64>,
}

pub fn check(input: &Input) -> (Vec<Check>, Value) {
    let mut checks = Vec::new();
    let rows_by_conv: BTreeMap<i64, Vec<&Row>> =
        input.rows.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.conv).or_insert_with(Vec::new).push(r);
            m
        });
    let by_key: HashMap<(i64, i64, &str), Vec<&Row>> =
        input.rows.iter().fold(HashMap::new(), |mut m, r| {
            m.entry((r.conv, r.sender, r.cid.as_str()))
                .or_insert_with(Vec::new)
                .push(r);
            m
        });
    let clients_by_user: HashMap<i64, &ClientLog> =
        input.clients.iter().map(|c| (c.user, c)).collect();

    // Every send of the run, with its sender.
    let mut sends: Vec<(i64, &SendOp)> = Vec::new();
    for c in input.clients {
        for s in &c.sends {
            sends.push((c.user, s));
        }
    }
    for s in input.notices {
        sends.push((0, s));
    }

    // (1) every acked message is stored once, with its seq, and reached every member.
    let mut lost = Check::new("acked_present_once_for_every_member");
    let mut acked = 0u64;
    for (sender, s) in &sends {
        let Outcome::Ok { seq, .. } = s.outcome else {
            continue;
        };
        acked += 1;
        let stored = by_key
            .get(&(s.conv, *sender, s.cid.as_str()))
            .map_or(0, Vec::len);
        if stored != 1 {
            lost.fail(format!(
                "cid {} (conv {}, user {sender}) acked seq {seq}, stored {stored} times",
                s.cid, s.conv
            ));
            continue;
        }
        if by_key[&(s.conv, *sender, s.cid.as_str())][0].seq != seq {
            lost.fail(format!(
                "cid {} acked seq {seq}, stored at another seq",
                s.cid
            ));
        }
        for member in input.membership.members.get(&s.conv).into_iter().flatten() {
            let Some(c) = clients_by_user.get(member) else {
                continue;
            };
            let has = c
                .delivered
                .get(&s.conv)
                .is_some_and(|d| d.binary_search_by_key(&seq, |m| m.seq).is_ok());
            if !has {
                lost.fail(format!(
                    "user {member} never got conv {} seq {seq} (cid {})",
                    s.conv, s.cid
                ));
            }
        }
    }
    checks.push(lost);

    // (2) each conversation's seqs are 1..last, once each.
    let mut seqs = Check::new("stored_seqs_without_gap_or_duplicate");
    for (conv, rows) in &rows_by_conv {
        let mut list: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        list.sort_unstable();
        for (i, seq) in list.iter().enumerate() {
            if *seq != i as i64 + 1 {
                seqs.fail(format!("conv {conv}: position {} holds seq {seq}", i + 1));
                break;
            }
        }
    }
    checks.push(seqs);

    // (3) what reached each client's application is each conversation's whole stored
    // stream, in order, once, with the stored content.
    let mut order = Check::new("each_client_got_each_stream_in_order_once");
    for c in input.clients {
        for (conv, members) in &input.membership.members {
            if !members.contains(&c.user) {
                continue;
            }
            let stored = rows_by_conv.get(conv).map_or(&[][..], |v| v.as_slice());
            let got = c.delivered.get(conv).map_or(&[][..], |v| v.as_slice());
            if got.len() != stored.len() {
                order.fail(format!(
                    "user {} conv {conv}: got {} of {} messages",
                    c.user,
                    got.len(),
                    stored.len()
                ));
                continue;
            }
            let mut sorted: Vec<&&Row> = stored.iter().collect();
            sorted.sort_by_key(|r| r.seq);
            for (d, r) in got.iter().zip(sorted) {
                if d.seq != r.seq || d.cid != r.cid || d.sender != r.sender {
                    order.fail(format!(
                        "user {} conv {conv}: got seq {} cid {} where seq {} cid {} is stored",
                        c.user, d.seq, d.cid, r.seq, r.cid
                    ));
                    break;
                }
            }
        }
        if c.sync_holes > 0 {
            order.fail(format!(
                "user {}: {} sync answers skipped a seq",
                c.user, c.sync_holes
            ));
        }
    }
    checks.push(order);

    // (4) nothing unexpected: every stored message was sent by someone who recorded
    // it; an unknown outcome that was stored is recovered; an error that claimed
    // nothing was stored for a message that was stored before it is counted.
    let mut phantom = Check::new("no_phantom_messages");
    let known: HashSet<(i64, i64, &str)> = sends
        .iter()
        .map(|(u, s)| (s.conv, *u, s.cid.as_str()))
        .collect();
    for r in input.rows {
        if !known.contains(&(r.conv, r.sender, r.cid.as_str())) {
            phantom.fail(format!(
                "conv {} seq {} cid {} by {} was never sent",
                r.conv, r.seq, r.cid, r.sender
            ));
        }
    }
    checks.push(phantom);
    let mut recovered = 0u64;
    let mut unknown_lost = 0u64;
    let mut failed_but_stored = Check::new("failed_sends_not_stored");
    // `unavailable` answers given for a message already stored: a COMMIT whose answer
    // was lost (the contract says such a send may have been stored).
    let mut unavailable_but_stored = 0u64;
    for (sender, s) in &sends {
        let stored = by_key.contains_key(&(s.conv, *sender, s.cid.as_str()));
        if let Some(row) = by_key
            .get(&(s.conv, *sender, s.cid.as_str()))
            .and_then(|v| v.first())
        {
            unavailable_but_stored += s
                .errors
                .iter()
                .filter(|(t, code)| code.contains("unavailable") && row.stored_at < *t)
                .count() as u64;
        }
        match &s.outcome {
            Outcome::Unknown if stored => recovered += 1,
            Outcome::Unknown => unknown_lost += 1,
            Outcome::Fail { code, .. } if stored => {
                failed_but_stored.fail(format!("cid {} failed with {code} but is stored", s.cid))
            }
            _ => {}
        }
    }
    checks.push(failed_but_stored);

    // (5) each final unread is the server's arithmetic over what is stored.
    let mut unread = Check::new("final_unread_matches_arithmetic");
    for f in input.final_reads {
        let own_max = rows_by_conv
            .get(&f.conv)
            .into_iter()
            .flatten()
            .filter(|r| r.sender == f.user)
            .map(|r| r.seq)
            .max()
            .unwrap_or(0);
        let read_seq = f.seq.max(own_max);
        let expected = rows_by_conv
            .get(&f.conv)
            .into_iter()
            .flatten()
            .filter(|r| r.seq > read_seq && r.sender != f.user)
            .count() as i64;
        if f.answered != expected || f.listed != expected {
            unread.fail(format!(
                "user {} conv {}: read {}, unread answered {} listed {}, expected {expected}",
                f.user, f.conv, f.seq, f.answered, f.listed
            ));
        }
    }
    checks.push(unread);

    // (6) a member who missed a push was told: by a resync, a gap or a reconnect
    // within 5 s; not counted while a fault that slows pushes lasts.
    let mut silent = Check::new("no_silent_stale_member");
    let mut stale_in_slow_faults = 0u64;
    let slow: Vec<(f64, f64)> = input
        .faults
        .iter()
        .filter(|f| f.kind.slows_pushes())
        .map(|f| (f.start, f.end + 2.0))
        .collect();
    for (sender, s) in &sends {
        let Outcome::Ok { seq, at } = s.outcome else {
            continue;
        };
        let window = (at, at + STALE_AFTER);
        for member in input.membership.members.get(&s.conv).into_iter().flatten() {
            if member == sender {
                continue;
            }
            let Some(c) = clients_by_user.get(member) else {
                continue;
            };
            let connected = c
                .conns
                .iter()
                .any(|k| k.opened <= window.0 && k.closed.is_none_or(|e| e >= window.1));
            if !connected {
                continue;
            }
            let known = c
                .first_known
                .get(&(s.conv, seq))
                .copied()
                .unwrap_or(f64::INFINITY);
            if known <= window.1 {
                continue;
            }
            let told = c.signals.iter().any(|(t, sig)| {
                *t >= window.0
                    && *t <= window.1
                    && matches!(sig, Signal::Resync | Signal::Gap | Signal::Connect)
            });
            if told {
                continue;
            }
            if slow.iter().any(|(a, b)| window.0 <= *b && window.1 >= *a) {
                stale_in_slow_faults += 1;
                continue;
            }
            silent.fail(format!(
                "user {member} sat on conv {} without seq {seq} (acked at {at:.1} s) until {known:.1} s, untold",
                s.conv
            ));
        }
    }
    checks.push(silent);

    let settled = input.clients.iter().filter(|c| c.settled).count();
    let mut settle = Check::new("every_client_settled");
    for c in input.clients.iter().filter(|c| !c.settled) {
        settle.fail(format!("user {} never finished its final sync", c.user));
    }
    checks.push(settle);

    let summary = json!({
        "operations": sends.len(),
        "acked": acked,
        "recovered_unknown": recovered,
        "unavailable_but_already_stored": unavailable_but_stored,
        "unknown_not_stored": unknown_lost,
        "stored": input.rows.len(),
        "clients_settled": settled,
        "silent_stale_during_slow_faults": stale_in_slow_faults,
        "pushed_twice": input.clients.iter().map(|c| c.pushed_twice).sum::<u64>(),
        "pushed_out_of_order": input.clients.iter().map(|c| c.pushed_out_of_order).sum::<u64>(),
        "reconnects": input.clients.iter().map(|c| c.conns.len().saturating_sub(1)).sum::<usize>(),
        "failed_connects": input.clients.iter().map(|c| u64::from(c.failed_connects)).sum::<u64>(),
        "resyncs": input.clients.iter().map(|c| c.signals.iter().filter(|(_, s)| *s == Signal::Resync).count()).sum::<usize>(),
        "syncs": input.clients.iter().map(|c| c.syncs).sum::<u64>(),
        "syncs_refused": input.clients.iter().map(|c| c.sync_refusals).sum::<u64>(),
        "broadcast_conv": input.broadcast_conv,
    });
    (checks, summary)
}

/// p-quantile of `v` (sorted here).
pub fn quantile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

/// Ack latencies (seconds) of sends invoked inside / outside fault windows.
pub fn ack_latencies(input: &Input) -> (Vec<f64>, Vec<f64>) {
    let windows: Vec<(f64, f64)> = input
        .faults
        .iter()
        .map(|f| (f.start, f.end + 2.0))
        .collect();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for c in input.clients {
        for s in &c.sends {
            if let Outcome::Ok { at, .. } = s.outcome {
                let lat = at - s.invoked;
                if windows
                    .iter()
                    .any(|(a, b)| s.invoked >= *a && s.invoked <= *b)
                {
                    with.push(lat);
                } else {
                    without.push(lat);
                }
            }
        }
    }
    (with, without)
}

/// Per fault, how long after its end each client took to get its next ack (includes
/// the wait for the client's next send, up to one send interval): max and p99 over
/// clients.
pub fn recovery(input: &Input) -> Vec<Value> {
    input
        .faults
        .iter()
        .map(|f| {
            let mut per_client: Vec<f64> = input
                .clients
                .iter()
                .filter_map(|c| {
                    c.sends
                        .iter()
                        .filter_map(|s| match s.outcome {
                            Outcome::Ok { at, .. } if at >= f.end => Some(at - f.end),
                            _ => None,
                        })
                        .reduce(f64::min)
                })
                .collect();
            let max = per_client.iter().copied().fold(0.0, f64::max);
            let p99 = quantile(&mut per_client, 0.99);
            // The sends invoked while the fault lasted: when the last was acked.
            let backlog = input
                .clients
                .iter()
                .flat_map(|c| &c.sends)
                .filter(|s| s.invoked >= f.start && s.invoked <= f.end)
                .filter_map(|s| match s.outcome {
                    Outcome::Ok { at, .. } => Some(at - f.end),
                    _ => None,
                })
                .fold(0.0, f64::max);
            json!({
                "kind": f.kind, "node": f.node, "start": round(f.start), "end": round(f.end),
                "note": f.note, "recover_max_s": round(max), "recover_p99_s": round(p99),
                "backlog_acked_after_s": round(backlog),
            })
        })
        .collect()
}

pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Conn, Delivered};

    fn row(conv: i64, seq: i64, sender: i64, cid: &str) -> Row {
        Row {
            conv,
            seq,
            sender,
            cid: cid.into(),
            stored_at: seq as f64,
        }
    }

    fn send(cid: &str, conv: i64, seq: i64, at: f64) -> SendOp {
        SendOp {
            cid: cid.into(),
            conv,
            invoked: at - 0.01,
            attempts: 1,
            errors: Vec::new(),
            outcome: Outcome::Ok { seq, at },
        }
    }

    fn client(user: i64, sends: Vec<SendOp>, got: &[(i64, i64, i64, &str)]) -> ClientLog {
        let mut c = ClientLog {
            user,
            sends,
            settled: true,
            ..ClientLog::default()
        };
        c.conns.push(Conn {
            opened: 0.0,
            closed: None,
            node: "node-1".into(),
            close_code: None,
        });
        for (conv, seq, sender, cid) in got {
            c.delivered.entry(*conv).or_default().push(Delivered {
                seq: *seq,
                sender: *sender,
                cid: (*cid).into(),
            });
            c.first_known.insert((*conv, *seq), *seq as f64 + 0.1);
        }
        c
    }

    fn failed(clients: &[ClientLog], rows: &[Row], reads: &[FinalRead]) -> Vec<&'static str> {
        let membership = Membership {
            members: BTreeMap::from([(7, vec![1, 2])]),
        };
        let input = Input {
            clients,
            notices: &[],
            faults: &[],
            rows,
            membership: &membership,
            final_reads: reads,
            broadcast_conv: None,
        };
        check(&input)
            .0
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let rows = [row(7, 1, 1, "a"), row(7, 2, 2, "b")];
        let both = [(7, 1, 1, "a"), (7, 2, 2, "b")];
        let clients = [
            client(1, vec![send("a", 7, 1, 1.0)], &both),
            client(2, vec![send("b", 7, 2, 2.0)], &both),
        ];
        let reads = [FinalRead {
            user: 1,
            conv: 7,
            seq: 1,
            answered: 1,
            listed: 1,
        }];
        assert!(failed(&clients, &rows, &reads).is_empty());
    }

    #[test]
    fn a_lost_ack_a_gap_a_phantom_and_a_wrong_unread_are_each_caught() {
        // "b" was acked at seq 2 but is not stored; "x" is stored and nobody sent it.
        let rows = [row(7, 1, 1, "a"), row(7, 3, 2, "x")];
        let clients = [
            client(1, vec![send("a", 7, 1, 1.0)], &[(7, 1, 1, "a")]),
            client(2, vec![send("b", 7, 2, 2.0)], &[(7, 1, 1, "a")]),
        ];
        let reads = [FinalRead {
            user: 1,
            conv: 7,
            seq: 1,
            answered: 0,
            listed: 0,
        }];
        let f = failed(&clients, &rows, &reads);
        for name in [
            "acked_present_once_for_every_member",
            "stored_seqs_without_gap_or_duplicate",
            "each_client_got_each_stream_in_order_once",
            "no_phantom_messages",
            "final_unread_matches_arithmetic",
        ] {
            assert!(f.contains(&name), "{name} not caught: {f:?}");
        }
    }

    #[test]
    fn a_member_that_never_heard_of_a_message_and_was_not_told_is_silent_stale() {
        let rows = [row(7, 1, 1, "a")];
        let mut late = client(2, Vec::new(), &[(7, 1, 1, "a")]);
        // Known only 20 s after the ack, with no resync, gap or reconnect meanwhile.
        late.first_known.insert((7, 1), 21.0);
        let clients = [
            client(1, vec![send("a", 7, 1, 1.0)], &[(7, 1, 1, "a")]),
            late,
        ];
        let f = failed(&clients, &rows, &[]);
        assert_eq!(f, vec!["no_silent_stale_member"]);
    }
}
