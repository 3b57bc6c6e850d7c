//! Deciding allocates nothing on the heap: not for a trusted call, nor for
//! one that fires risk rules (the fired set is a bit mask, verdicts borrow
//! from the policy). Building a challenge for a refusal may.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use stepup_core::{TokenFacts, UnixTime, Verdict};

#[test]
fn decisions_do_not_allocate() {
    let policy = common::policy_with_risk(true);
    let token = TokenFacts {
        acr: Some("urn:stepup:acr:mfa"),
        auth_time: Some(UnixTime(1_000)),
        scope: Some("svc7 svc3"),
    };
    let now = UnixTime(1_100);
    let trusted = common::trusted();
    let suspicious = common::suspicious();
    // Warm up whatever is lazily set up once.
    let _ = policy.decide_with("POST", "/svc7/items/42/approve", &token, &trusted, now);

    let mut verdicts = Vec::with_capacity(2);
    let counted = allocation_counter::measure(|| {
        let d = policy
            .decide_with("POST", "/svc7/items/42/approve", &token, &trusted, now)
            .unwrap();
        verdicts.push(d.verdict == Verdict::Allow);
        let d = policy
            .decide_with("POST", "/svc7/items/42/approve", &token, &suspicious, now)
            .unwrap();
        verdicts.push(d.fired.len() == 3);
    });
    assert_eq!(
        verdicts,
        [true, true],
        "the trusted call passes; the suspicious one fires 3 rules"
    );
    assert_eq!(counted.count_total, 0, "{counted:?}");
}
