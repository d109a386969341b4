//! Include/exclude rules: whether the current task may be traced.
//!
//! Owns: evaluating `FILTER_RULES` (comm and cgroup-subtree rules set by the agent) for the
//! current task. Called only when a connection or request is first seen, never per byte.
//! Must not: allocate map entries or emit events.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, generated::bpf_get_current_comm};
use sonde_ebpf_common::{
    COMM_LEN,
    http::{FILTER_RULES_MAX, filter_action, filter_kind},
};

use crate::maps::{FILTER_HAS_INCLUDE, FILTER_RULE_COUNT, FILTER_RULES, global, set};

/// Whether the current task passes the rules (always true when there are none).
#[inline(always)]
pub fn allowed() -> bool {
    let count = global(&FILTER_RULE_COUNT) as u32;
    if count == 0 {
        return true;
    }
    let mut words = [0u64; 2];
    set(&mut words[0], 0);
    set(&mut words[1], 0);
    // SAFETY: 16 writable bytes; on failure they stay zero.
    unsafe { bpf_get_current_comm(words.as_mut_ptr().cast(), COMM_LEN as u32) };
    // SAFETY: two u64 are 16 bytes.
    let comm: [u8; COMM_LEN] = unsafe { core::mem::transmute(words) };
    let mut included = false;
    let mut i = 0;
    while i < FILTER_RULES_MAX {
        if i >= count {
            break;
        }
        if let Some(rule) = FILTER_RULES.get(i) {
            let matched = match rule.kind {
                filter_kind::COMM => rule.comm == comm,
                filter_kind::CGROUP => {
                    // SAFETY: helper without memory arguments.
                    let id = unsafe { bpf_get_current_ancestor_cgroup_id(rule.level as i32) };
                    id == rule.cgroup_id
                }
                _ => false,
            };
            if matched {
                if rule.action == filter_action::EXCLUDE {
                    return false;
                }
                included = true;
            }
        }
        i += 1;
    }
    included || global(&FILTER_HAS_INCLUDE) == 0
}
