//! An in-memory quota store: a small model of `reserve_v1`/`settle_v1` admission that records
//! every spec it is given, so tests assert what the engine would write to Redis.

use super::runtime::FakeClock;
use crate::engine::QuotaStore;
use crate::error::LimitKind;
use crate::store::upstash::StoreError;
use crate::store::{ConvLock, CooldownSpec, Reservation, ReserveSpec, SettleSpec, Settled};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// What a reservation asked for, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct ReserveRecord {
    pub rid: String,
    pub est: u64,
    pub model: Option<String>,
    /// Offered key ids, in order.
    pub candidates: Vec<String>,
    /// Names of the buckets charged.
    pub buckets: Vec<&'static str>,
    pub conv: Option<(String, String, bool)>,
}

/// The conversation part of a settle, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSettleRecord {
    pub id: String,
    pub lock_id: String,
    pub turns: Vec<String>,
    pub ttl_s: u64,
    pub tokens: u64,
    pub est: u64,
}

/// What a settle wrote, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct SettleRecord {
    pub key_id: String,
    pub rid: String,
    pub day: i64,
    pub outcome: &'static str,
    pub release: bool,
    pub input: Option<u64>,
    pub output: u64,
    pub thoughts: u64,
    pub cooldown: Option<CooldownSpec>,
    pub disable: Option<(String, String)>,
    pub conv: Option<ConvSettleRecord>,
}

/// A stored conversation.
#[derive(Debug, Clone, Default)]
pub struct FakeConversation {
    pub owner: String,
    pub model: String,
    pub turns: Vec<String>,
    pub system: Option<String>,
    /// The lock id holding the conversation, if any.
    pub lock: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Reservations counted per key (never expire: tests are shorter than a window).
    used: BTreeMap<String, u32>,
    /// `(quota_group, model)` → cooldown end.
    cooling: BTreeMap<(String, String), u64>,
    disabled: BTreeMap<String, String>,
    conversations: BTreeMap<String, FakeConversation>,
    /// Refusals to answer instead of choosing: `(model or any, limit, retry after ms)`.
    refusals: Vec<(Option<String>, LimitKind, Option<u64>)>,
    fail_reserve: Option<StoreError>,
    fail_settle: Option<StoreError>,
    reserves: Vec<ReserveRecord>,
    settles: Vec<SettleRecord>,
}

/// The fake store. Admission picks the first offered key of the request's model (or the
/// conversation's, for `pick_model`) that is not disabled, not cooling and under its rpm.
#[derive(Debug)]
pub struct FakeStore {
    clock: FakeClock,
    state: RefCell<State>,
}

/// The Pacific day number the fake reports (any fixed value: the engine only echoes it).
pub const FAKE_DAY: i64 = 20_788;

impl FakeStore {
    pub fn new(clock: FakeClock) -> FakeStore {
        FakeStore { clock, state: RefCell::new(State::default()) }
    }

    /// Refuses every reservation for `model` (`None`: any model) with `limit`.
    pub fn refuse(&self, model: Option<&str>, limit: LimitKind, retry_after_ms: Option<u64>) {
        self.state.borrow_mut().refusals.push((model.map(str::to_string), limit, retry_after_ms));
    }
    pub fn fail_reserve(&self, e: StoreError) {
        self.state.borrow_mut().fail_reserve = Some(e);
    }
    pub fn fail_settle(&self, e: StoreError) {
        self.state.borrow_mut().fail_settle = Some(e);
    }
    pub fn disable(&self, key_id: &str, reason: &str) {
        self.state.borrow_mut().disabled.insert(key_id.to_string(), reason.to_string());
    }
    pub fn add_conversation(&self, id: &str, conv: FakeConversation) {
        self.state.borrow_mut().conversations.insert(id.to_string(), conv);
    }
    pub fn conversation(&self, id: &str) -> Option<FakeConversation> {
        self.state.borrow().conversations.get(id).cloned()
    }
    pub fn disabled(&self) -> BTreeMap<String, String> {
        self.state.borrow().disabled.clone()
    }
    pub fn cooling(&self) -> BTreeMap<(String, String), u64> {
        self.state.borrow().cooling.clone()
    }
    pub fn reserves(&self) -> Vec<ReserveRecord> {
        self.state.borrow().reserves.clone()
    }
    pub fn settles(&self) -> Vec<SettleRecord> {
        self.state.borrow().settles.clone()
    }
}

fn record_reserve(spec: &ReserveSpec<'_>) -> ReserveRecord {
    ReserveRecord {
        rid: spec.rid.clone(),
        est: spec.est,
        model: spec.model.clone(),
        candidates: spec.candidates.iter().map(|k| k.key_id.clone()).collect(),
        buckets: spec.buckets.iter().map(|b| b.name).collect(),
        conv: spec.conv.as_ref().map(|c: &ConvLock| (c.id.clone(), c.lock_id.clone(), c.pick_model)),
    }
}

impl QuotaStore for FakeStore {
    async fn reserve(&self, spec: &ReserveSpec<'_>) -> Result<Reservation, StoreError> {
        let now = self.clock.now();
        let mut st = self.state.borrow_mut();
        st.reserves.push(record_reserve(spec));
        if let Some(e) = st.fail_reserve.clone() {
            return Err(e);
        }
        let mut model = spec.model.clone();
        let mut chosen_model = None;
        if let Some(c) = &spec.conv {
            let Some(conv) = st.conversations.get(&c.id).filter(|v| v.owner == c.owner) else {
                return Ok(Reservation::ConversationNotFound);
            };
            if conv.lock.as_ref().is_some_and(|l| *l != c.lock_id) {
                return Ok(Reservation::ConversationBusy);
            }
            if c.pick_model {
                model = Some(conv.model.clone());
                chosen_model = Some(conv.model.clone());
            }
        }
        let of_model: Vec<_> =
            spec.candidates.iter().filter(|k| model.as_ref().is_none_or(|m| *m == k.model)).collect();
        if of_model.is_empty() {
            return Ok(Reservation::NoCandidates);
        }
        if let Some((_, limit, retry)) = st.refusals.iter().find(|(m, _, _)| m.is_none() || *m == model).cloned() {
            return Ok(Reservation::Refused { limit, retry_at: retry.map(|r| now + r), now, bucket: None });
        }
        if of_model.iter().all(|k| spec.est > k.tpm as u64) {
            return Ok(Reservation::PromptTooLarge);
        }
        let mut why = BTreeSet::new();
        let mut retry_at = None;
        let chosen = of_model.iter().find(|k| {
            if st.disabled.contains_key(&k.key_id) {
                why.insert(LimitKind::Disabled.as_str());
                return false;
            }
            if let Some(&until) = st.cooling.get(&(k.quota_group.clone(), k.model.clone())).filter(|&&u| u > now) {
                why.insert(LimitKind::Cooldown.as_str());
                retry_at = Some(retry_at.map_or(until, |r: u64| r.min(until)));
                return false;
            }
            if st.used.get(&k.key_id).copied().unwrap_or(0) >= k.rpm {
                why.insert(LimitKind::Rpm.as_str());
                return false;
            }
            true
        });
        let Some(key) = chosen else {
            // The most transient reason wins, as the caller's retry-after is about it.
            let limit = ["rpm", "cooldown", "disabled"].into_iter().find(|l| why.contains(l)).unwrap_or("disabled");
            let limit = LimitKind::parse(limit).unwrap_or(LimitKind::Disabled);
            return Ok(Reservation::Refused { limit, retry_at, now, bucket: None });
        };
        let key_id = key.key_id.clone();
        *st.used.entry(key_id.clone()).or_default() += 1;
        let (history, system) = match &spec.conv {
            Some(c) => {
                let conv = st.conversations.get_mut(&c.id).expect("checked above");
                conv.lock = Some(c.lock_id.clone());
                (conv.turns.clone(), conv.system.clone())
            }
            None => (Vec::new(), None),
        };
        Ok(Reservation::Reserved {
            key_id,
            model: chosen_model,
            rid: spec.rid.clone(),
            // The fake keeps no history estimate: what was asked is what is reserved.
            est: spec.est,
            now,
            day: FAKE_DAY,
            history,
            system,
        })
    }

    async fn settle(&self, spec: &SettleSpec<'_>) -> Result<Settled, StoreError> {
        let now = self.clock.now();
        let mut st = self.state.borrow_mut();
        st.settles.push(SettleRecord {
            key_id: spec.key.key_id.clone(),
            rid: spec.rid.clone(),
            day: spec.day,
            outcome: spec.outcome,
            release: spec.release,
            input: spec.input,
            output: spec.output,
            thoughts: spec.thoughts,
            cooldown: spec.cooldown.clone(),
            disable: spec.disable.clone(),
            conv: spec.conv.as_ref().map(|c| ConvSettleRecord {
                id: c.id.clone(),
                lock_id: c.lock_id.clone(),
                turns: c.turns.clone(),
                ttl_s: c.ttl_s,
                tokens: c.tokens,
                est: c.est,
            }),
        });
        if let Some(e) = st.fail_settle.clone() {
            return Err(e);
        }
        let key = spec.key;
        if spec.release {
            if let Some(n) = st.used.get_mut(&key.key_id) {
                *n = n.saturating_sub(1);
            }
        }
        let cooldown_until = spec.cooldown.as_ref().map(|c| {
            let until = now
                + match c {
                    CooldownSpec::Delay { ms, .. } => *ms,
                    CooldownSpec::UntilPacificMidnight { .. } => 86_400_000,
                    CooldownSpec::Unknown { .. } => 60_000,
                };
            st.cooling.insert((key.quota_group.clone(), key.model.clone()), until);
            until
        });
        if let Some((reason, _)) = &spec.disable {
            st.disabled.insert(key.key_id.clone(), reason.clone());
        }
        let mut message_count = None;
        if let Some(c) = &spec.conv {
            if let Some(conv) = st.conversations.get_mut(&c.id) {
                if conv.lock.as_deref() == Some(c.lock_id.as_str()) {
                    conv.lock = None;
                    conv.turns.extend(c.turns.iter().cloned());
                }
                message_count = Some(conv.turns.len() as u64);
            }
        }
        Ok(Settled { now, cooldown_until, message_count })
    }
}
