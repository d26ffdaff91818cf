//! `include/hub_layout.h` says what this crate says: a C program compiled against it with the
//! system's `cc` prints every struct's size and every field's offset and every constant, and
//! each must equal the Rust figure.

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use hub_layout::*;

/// `(name, value)` of every figure, on the Rust side; the C program prints the same names.
fn rust_figures() -> Vec<(String, u64)> {
    let mut figures: Vec<(String, u64)> = Vec::new();
    let mut add = |name: &str, value: usize| figures.push((name.to_string(), value as u64));
    macro_rules! layout {
        ($ty:ident: $($field:ident $(as $c:ident)?),*) => {
            add(concat!("sizeof ", stringify!($ty)), size_of::<$ty>());
            $(add(
                concat!("offsetof ", stringify!($ty), " ", stringify!($field)),
                offset_of!($ty, $field),
            );)*
        };
    }
    layout!(HubHeader: magic, version, flags, max_peers, active_peers, peer_id_counter, _pad1,
        current_size, extent_count, ring_capacity, peer_table_offset, ring_region_offset,
        size_class_offset, extent_region_offset, _pad2);
    layout!(PeerEntry: peer_id, peer_type, flags, epoch, last_seen, send_ring_offset,
        recv_ring_offset, send_data_futex, recv_data_futex, _pad);
    layout!(MsgDescHot: msg_id, channel_id, method_id, payload_slot, payload_generation,
        payload_offset, payload_len, flags, credit_grant, deadline_ns, inline_payload);
    layout!(DescRingHeader: visible_head, _pad_head, tail, _pad_tail, capacity, _pad);
    layout!(SizeClassHeader: slot_size, slots_per_extent, extent_slot_shift, total_slots,
        free_head, extent_offsets, slot_available_futex, _pad);
    layout!(ExtentHeader: extent_index, base_global_index, slot_count, slot_size, meta_offset,
        data_offset, _pad);
    add(
        "offsetof ExtentHeader class",
        offset_of!(ExtentHeader, class),
    );
    layout!(HubSlotMeta: generation, state, next_free, owner_peer);
    let mut constant = |name: &str, value: u64| figures.push((name.to_string(), value));
    constant("HUB_PROTOCOL_VERSION", u64::from(HUB_PROTOCOL_VERSION));
    constant("HUB_MAX_PEERS", u64::from(MAX_PEERS));
    constant("HUB_NUM_SIZE_CLASSES", NUM_SIZE_CLASSES as u64);
    constant("HUB_MAX_EXTENTS_PER_CLASS", MAX_EXTENTS_PER_CLASS as u64);
    constant(
        "HUB_DEFAULT_RING_CAPACITY",
        u64::from(DEFAULT_HUB_RING_CAPACITY),
    );
    constant("HUB_FREE_LIST_END", u64::from(FREE_LIST_END));
    constant("HUB_NO_OWNER", u64::from(NO_OWNER));
    constant("HUB_HOST_OWNER", u64::from(HOST_OWNER));
    constant("HUB_KEPT_SLOT_MARK", u64::from(KEPT_SLOT_MARK));
    constant("HUB_INLINE_PAYLOAD_SIZE", INLINE_PAYLOAD_SIZE as u64);
    constant("HUB_INLINE_PAYLOAD_SLOT", u64::from(INLINE_PAYLOAD_SLOT));
    constant("HUB_NO_DEADLINE", NO_DEADLINE);
    constant("HUB_SLOT_INDEX_BITS", u64::from(SLOT_INDEX_BITS));
    constant("HUB_MAX_ENCODABLE_CLASS", u64::from(MAX_ENCODABLE_CLASS));
    constant("HUB_PEER_FLAG_ACTIVE", u64::from(PEER_FLAG_ACTIVE));
    constant("HUB_PEER_FLAG_DYING", u64::from(PEER_FLAG_DYING));
    constant("HUB_PEER_FLAG_DEAD", u64::from(PEER_FLAG_DEAD));
    constant("HUB_PEER_FLAG_RESERVED", u64::from(PEER_FLAG_RESERVED));
    constant("HUB_SLOT_FREE", SlotState::Free as u64);
    constant("HUB_SLOT_ALLOCATED", SlotState::Allocated as u64);
    constant("HUB_SLOT_IN_FLIGHT", SlotState::InFlight as u64);
    for (class, &(size, slots)) in HUB_SIZE_CLASSES.iter().enumerate() {
        constant(&format!("HUB_CLASS_{class}_SLOT_SIZE"), u64::from(size));
        constant(&format!("HUB_CLASS_{class}_SLOTS"), u64::from(slots));
    }
    let offset = |value: usize| value as u64;
    constant(
        "HUB_HEADER_HOST_JOURNAL_OFFSET",
        offset(HubHeader::HOST_JOURNAL_OFFSET),
    );
    constant(
        "HUB_HEADER_HOST_PID_OFFSET",
        offset(HubHeader::HOST_PID_OFFSET),
    );
    constant(
        "HUB_HEADER_HOST_STATE_OFFSET",
        offset(HubHeader::HOST_STATE_OFFSET),
    );
    constant(
        "HUB_HEADER_HOST_BELL_OFFSET",
        offset(HubHeader::HOST_BELL_OFFSET),
    );
    constant(
        "HUB_HEADER_SIZE_LIMIT_OFFSET",
        offset(HubHeader::SIZE_LIMIT_OFFSET),
    );
    constant(
        "HUB_HEADER_HEARTBEAT_MS_OFFSET",
        offset(HubHeader::HEARTBEAT_MS_OFFSET),
    );
    constant("HUB_PEER_JOURNAL_OFFSET", offset(PeerEntry::JOURNAL_OFFSET));
    constant("HUB_PEER_PID_OFFSET", offset(PeerEntry::PID_OFFSET));
    constant(
        "HUB_PEER_READY_WAITERS_OFFSET",
        offset(PeerEntry::READY_WAITERS_OFFSET),
    );
    constant("HUB_READY_PEER", u64::from(READY_PEER));
    constant("HUB_READY_HOST", u64::from(READY_HOST));
    constant("HUB_READY_BRIDGED", u64::from(READY_BRIDGED));
    constant(
        "HUB_ENCODE_SLOT_REF(3, 12345)",
        u64::from(encode_slot_ref(3, 12345)),
    );
    figures
}

/// The C program: one `printf` per figure, in the same `name value` form.
fn c_program(figures: &[(String, u64)]) -> String {
    let mut program = String::from(
        "#include <stdio.h>\n#include <string.h>\n#include \"hub_layout.h\"\nint main(void) {\n",
    );
    for (name, _) in figures {
        let expr = if let Some(ty) = name.strip_prefix("sizeof ") {
            format!("sizeof({ty})")
        } else if let Some(rest) = name.strip_prefix("offsetof ") {
            let (ty, field) = rest.split_once(' ').unwrap();
            // `class` is a C++ keyword: the header names that field `class_`.
            let field = if field == "class" { "class_" } else { field };
            format!("offsetof({ty}, {field})")
        } else {
            name.clone()
        };
        program.push_str(&format!(
            "    printf(\"%s %llu\\n\", \"{name}\", (unsigned long long)({expr}));\n"
        ));
    }
    program.push_str(
        "    printf(\"magic %d\\n\", memcmp(HUB_MAGIC, \"RAPAHUB\", 8) == 0);\n    return 0;\n}\n",
    );
    program
}

#[test]
fn the_c_header_matches_the_rust_layout() {
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = std::env::temp_dir().join(format!("hub-c-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let figures = rust_figures();
    let source = dir.join("check.c");
    std::fs::write(&source, c_program(&figures)).unwrap();
    let binary = dir.join("check");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let compiled = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .unwrap_or_else(|e| panic!("run the C compiler {cc:?}: {e}"));
    assert!(
        compiled.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let output = Command::new(&binary).output().expect("run the C program");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let mut lines = printed.lines();
    for (name, value) in &figures {
        let line = lines.next().unwrap_or_else(|| panic!("no line for {name}"));
        assert_eq!(line, format!("{name} {value}"), "C says otherwise");
    }
    assert_eq!(lines.next(), Some("magic 1"), "HUB_MAGIC");
    assert_eq!(&HUB_MAGIC, b"RAPAHUB\0");
}
