//! `cargo xtask protocol`: keeps `docs/PROTOCOL.md` and the code honest with each other.
//!
//! Two checks, each reporting every problem with its file and line:
//!
//! - **Citations.** Every rule number `R<n>` written in the workspace's sources and documents
//!   (`.rs`, `.md`, `.h`, `.toml`, outside `target/` and hidden directories) must have a
//!   section `## R<n>. ...` in `docs/PROTOCOL.md`; every `PROTOCOL.md` followed by a section
//!   sign and a number must name a numbered section (`## N. ...`, `### N.M ...`), and every
//!   link to `PROTOCOL.md` with an anchor (and, inside the document, every `(#anchor)` and
//!   every section sign) a heading. A section sign that names no document,
//!   and any citation of the design document users never see (the upper-case word of its
//!   name), are errors too.
//! - **Tables.** The tables of `docs/PROTOCOL.md` that follow a marker
//!   `<!-- check: KIND ... -->` are compared with what hub-layout compiles to: `struct NAME`
//!   (every row's offset and size against `offset_of!` and `size_of`, the rows covering every
//!   byte of the struct, and the size and alignment in the heading), `constants` (every
//!   constant of hub-layout, each value), `size-classes` (`HUB_SIZE_CLASSES` and each class's
//!   extent geometry), `segment P C` (the regions of `SegmentLayout::new(P, C)`), and
//!   `versions` (the same rows as hub-layout's own version table, the last one
//!   `HUB_PROTOCOL_VERSION`). The values of the `transport-constants` table belong to
//!   hub-transport and hub-alloc, which the task runner does not link: a unit test of this
//!   module checks them (it runs in the `test` step).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use hub_layout::{
    DescRingHeader, ExtentHeader, HubHeader, HubSlotMeta, MsgDescHot, PeerEntry, SegmentLayout,
    SizeClassHeader,
};

/// Where the protocol lives, from the workspace root.
pub const PROTOCOL: &str = "docs/PROTOCOL.md";

/// The section sign, written as an escape so that this file cites nothing itself.
const SECTION: char = '\u{a7}';

/// The name of the design document users never see, in two pieces for the same reason.
const DESIGN_DOC: &str = concat!("DES", "IGN");

/// The start of a link to a heading of the document (in two pieces, as above).
const ANCHORED: &str = concat!("PROTOCOL.md", "#");

/// One problem: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the workspace root.
    pub file: String,
    /// Its line, from 1 (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

/// What a run checked, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Files scanned for citations.
    pub files: usize,
    /// Citations found (all resolved when there are no problems).
    pub citations: usize,
    /// Table rows compared with hub-layout.
    pub rows: usize,
}

/// A heading of the protocol document.
#[derive(Debug, Clone)]
pub struct Heading {
    /// Its line, from 1.
    pub line: usize,
    /// Its text, without the `#`s.
    pub text: String,
}

/// A table that follows a `<!-- check: ... -->` marker.
#[derive(Debug, Clone)]
pub struct Table {
    /// The words of the marker after `check:`.
    pub kind: Vec<String>,
    /// The heading the table is under.
    pub heading: Option<Heading>,
    /// The body rows: `(line, cells)`, cells trimmed.
    pub rows: Vec<(usize, Vec<String>)>,
}

/// The parts of the protocol document the checks need.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    /// Rule numbers with a section.
    pub rules: BTreeSet<u32>,
    /// Section numbers with a heading (`2`, `2.1`, ...).
    pub sections: BTreeSet<String>,
    /// Every heading's anchor, as GitHub makes them.
    pub anchors: BTreeSet<String>,
    /// The checked tables.
    pub tables: Vec<Table>,
}

impl Doc {
    /// Parse the document's text.
    pub fn parse(text: &str) -> Self {
        let mut doc = Doc::default();
        let mut heading: Option<Heading> = None;
        let mut marker: Option<Vec<String>> = None;
        let mut table: Option<Table> = None;
        let mut in_code = false;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim();
            if trimmed.starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            if let Some(current) = table.as_mut() {
                if trimmed.starts_with('|') {
                    let cells = split_row(trimmed);
                    if !cells.iter().all(|c| c.chars().all(|ch| "-:".contains(ch))) {
                        current.rows.push((number, cells));
                    }
                    continue;
                }
                doc.tables.extend(table.take());
            }
            if let Some(rest) = trimmed.strip_prefix("<!-- check:") {
                let words = rest.trim_end_matches("-->").split_whitespace();
                marker = Some(words.map(str::to_owned).collect());
                continue;
            }
            if trimmed.starts_with('|') {
                if let Some(kind) = marker.take() {
                    // The first row is the table's header: not a row to check.
                    table = Some(Table {
                        kind,
                        heading: heading.clone(),
                        rows: Vec::new(),
                    });
                }
                continue;
            }
            if !trimmed.is_empty() && marker.is_some() && !trimmed.starts_with('#') {
                // A marker must stand right before its table.
                marker = None;
            }
            let level = trimmed.chars().take_while(|&c| c == '#').count();
            if (1..=6).contains(&level) && trimmed[level..].starts_with(' ') {
                let text = trimmed[level..].trim().to_owned();
                doc.heading(&text);
                heading = Some(Heading { line: number, text });
            }
        }
        doc.tables.extend(table);
        doc
    }

    /// Record a heading: its anchor, and the rule or section number it starts with.
    fn heading(&mut self, text: &str) {
        let base = slug(text);
        let mut anchor = base.clone();
        let mut n = 0;
        while self.anchors.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        self.anchors.insert(anchor);
        if let Some(rest) = text.strip_prefix('R') {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() && rest[digits.len()..].starts_with(". ") {
                self.rules.extend(digits.parse::<u32>().ok());
            }
        }
        let number = section_number(text);
        let after = &text[number.len()..];
        if !number.is_empty() && (after.starts_with(". ") || after.starts_with(' ')) {
            self.sections.insert(number.to_owned());
        }
    }
}

/// The anchor GitHub gives a heading: lower case, spaces to hyphens, other punctuation gone.
pub fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == '-' || c == '_' || c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The section number `text` starts with (`2`, `2.1`), or "".
fn section_number(text: &str) -> &str {
    let mut end = 0;
    let bytes = text.as_bytes();
    while end < bytes.len() {
        let digits = bytes[end..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            break;
        }
        end += digits;
        if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end += 1;
        } else {
            break;
        }
    }
    &text[..end]
}

/// The cells of a table row, trimmed.
fn split_row(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every citation on one line, checked against `doc`. `own` is true for the protocol document
/// itself, whose bare section signs and `(#anchor)` links name its own sections.
fn check_line(doc: &Doc, line: &str, own: bool, found: &mut usize) -> Vec<String> {
    let mut problems = Vec::new();
    let bytes = line.as_bytes();
    // Rule numbers: `R` and digits, not inside a word.
    for (i, _) in line.match_indices('R') {
        if i > 0 && is_word(bytes[i - 1]) {
            continue;
        }
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = i + 1 + digits;
        if digits == 0 || bytes.get(end).is_some_and(|&b| is_word(b)) {
            continue;
        }
        *found += 1;
        let rule = &line[i..end];
        if !line[i + 1..end]
            .parse::<u32>()
            .is_ok_and(|n| doc.rules.contains(&n))
        {
            problems.push(format!("{rule} has no section in {PROTOCOL}"));
        }
    }
    // The design document users never see.
    for (i, _) in line.match_indices(DESIGN_DOC) {
        let end = i + DESIGN_DOC.len();
        if (i == 0 || !is_word(bytes[i - 1])) && bytes.get(end).is_none_or(|&b| !is_word(b)) {
            problems.push(format!(
                "cites {DESIGN_DOC}, a document users do not have: cite {PROTOCOL}"
            ));
        }
    }
    // Links to a heading of the document.
    for (i, _) in line.match_indices(ANCHORED) {
        let start = i + ANCHORED.len();
        let anchor: String = line[start..]
            .chars()
            .take_while(|&c| c.is_alphanumeric() || c == '-' || c == '_')
            .collect();
        *found += 1;
        if !doc.anchors.contains(&anchor) {
            problems.push(format!("{PROTOCOL}, #{anchor}, names no heading"));
        }
    }
    if own {
        for (i, _) in line.match_indices("](#") {
            let anchor: String = line[i + 3..].chars().take_while(|&c| c != ')').collect();
            *found += 1;
            if !doc.anchors.contains(&anchor) {
                problems.push(format!("#{anchor} names no heading"));
            }
        }
    }
    // Section signs: after `PROTOCOL.md` anywhere, bare in the document itself.
    for (i, _) in line.match_indices(SECTION) {
        let cited = line[i + SECTION.len_utf8()..].trim_start();
        let number = section_number(cited);
        let named = line[..i].trim_end().ends_with("PROTOCOL.md");
        if !named && !own {
            problems.push(format!(
                "a section sign that names no document: write `PROTOCOL.md {SECTION}N`"
            ));
            continue;
        }
        *found += 1;
        if !doc.sections.contains(number) {
            problems.push(format!(
                "PROTOCOL.md {SECTION}{number} names no section (at {:?})",
                cited.chars().take(12).collect::<String>()
            ));
        }
    }
    problems
}

/// The files whose citations are checked: sources and documents under `root`, outside
/// `target/` and hidden directories, in a stable order.
pub fn cited_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| ["rs", "md", "h", "toml"].iter().any(|x| e == *x))
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    files
}

/// Run both checks over the workspace at `root`.
pub fn check(root: &Path) -> (Checked, Vec<Problem>) {
    let mut checked = Checked::default();
    let mut problems = Vec::new();
    let text = match fs::read_to_string(root.join(PROTOCOL)) {
        Ok(text) => text,
        Err(error) => {
            problems.push(Problem {
                file: PROTOCOL.into(),
                line: 0,
                what: format!("cannot read it: {error}"),
            });
            return (checked, problems);
        }
    };
    let doc = Doc::parse(&text);
    for path in cited_files(root) {
        let Ok(content) = fs::read_to_string(&path) else {
            continue;
        };
        let file = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let own = file == PROTOCOL;
        checked.files += 1;
        for (index, line) in content.lines().enumerate() {
            for what in check_line(&doc, line, own, &mut checked.citations) {
                problems.push(Problem {
                    file: file.clone(),
                    line: index + 1,
                    what,
                });
            }
        }
    }
    let layout_docs =
        fs::read_to_string(root.join("crates/hub-layout/src/lib.rs")).unwrap_or_default();
    let (rows, table_problems) = check_tables(&doc, &layout_docs);
    checked.rows = rows;
    problems.extend(table_problems.into_iter().map(|(line, what)| Problem {
        file: PROTOCOL.into(),
        line,
        what,
    }));
    (checked, problems)
}

// ----- the tables against hub-layout -----

/// One field of a struct, as the compiler lays it out.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its name.
    pub name: &'static str,
    /// Its offset.
    pub offset: usize,
    /// Its size.
    pub size: usize,
}

/// A struct of the layout, as the compiler lays it out.
#[derive(Debug, Clone)]
pub struct Struct {
    /// Its name.
    pub name: &'static str,
    /// `size_of`.
    pub size: usize,
    /// `align_of`.
    pub align: usize,
    /// Every field.
    pub fields: Vec<Field>,
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! layout {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        Struct {
            name: stringify!($ty),
            size: size_of::<$ty>(),
            align: align_of::<$ty>(),
            fields: vec![$(Field {
                name: stringify!($field),
                offset: core::mem::offset_of!($ty, $field),
                size: field_size(|s: &$ty| &s.$field),
            }),*],
        }
    };
}

/// The seven shared structs, every field, as hub-layout compiles them.
pub fn structs() -> Vec<Struct> {
    vec![
        layout!(HubHeader {
            magic,
            version,
            flags,
            max_peers,
            active_peers,
            peer_id_counter,
            _pad1,
            current_size,
            extent_count,
            ring_capacity,
            peer_table_offset,
            ring_region_offset,
            size_class_offset,
            extent_region_offset,
            _pad2,
        }),
        layout!(PeerEntry {
            peer_id,
            peer_type,
            flags,
            epoch,
            last_seen,
            send_ring_offset,
            recv_ring_offset,
            send_data_futex,
            recv_data_futex,
            _pad,
        }),
        layout!(DescRingHeader {
            visible_head,
            _pad_head,
            tail,
            _pad_tail,
            capacity,
            _pad
        }),
        layout!(MsgDescHot {
            msg_id,
            channel_id,
            method_id,
            payload_slot,
            payload_generation,
            payload_offset,
            payload_len,
            flags,
            credit_grant,
            deadline_ns,
            inline_payload,
        }),
        layout!(SizeClassHeader {
            slot_size,
            slots_per_extent,
            extent_slot_shift,
            total_slots,
            free_head,
            extent_offsets,
            slot_available_futex,
            _pad,
        }),
        layout!(ExtentHeader {
            class,
            extent_index,
            base_global_index,
            slot_count,
            slot_size,
            meta_offset,
            data_offset,
            _pad,
        }),
        layout!(HubSlotMeta {
            generation,
            state,
            next_free,
            owner_peer
        }),
    ]
}

/// A constant's value: a number, or text (the magic, a variable's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Int(u128),
    /// Text, with a NUL written `\0`.
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n} ({n:#x})"),
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// A table cell as a value: backticks dropped; `0x` hex or decimal, `,` and `_` allowed in a
/// number; anything else is text.
pub fn parse_value(cell: &str) -> Value {
    let cell = cell.trim().trim_matches('`');
    let digits: String = cell.chars().filter(|&c| c != ',' && c != '_').collect();
    let number = match digits.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16).ok(),
        None => digits.parse().ok(),
    };
    number.map_or_else(|| Value::Text(cell.to_owned()), Value::Int)
}

/// Every constant of hub-layout, by the name the constants table gives it.
pub fn layout_constants() -> Vec<(&'static str, Value)> {
    use hub_layout::*;
    let magic: String = HUB_MAGIC
        .iter()
        .map(|&b| match b {
            0 => "\\0".to_owned(),
            b => (b as char).to_string(),
        })
        .collect();
    let int = |n: u128| Value::Int(n);
    vec![
        ("HUB_MAGIC", Value::Text(magic)),
        ("HUB_PROTOCOL_VERSION", int(HUB_PROTOCOL_VERSION.into())),
        ("MAX_PEERS", int(MAX_PEERS.into())),
        ("NUM_SIZE_CLASSES", int(NUM_SIZE_CLASSES as u128)),
        ("MAX_EXTENTS_PER_CLASS", int(MAX_EXTENTS_PER_CLASS as u128)),
        (
            "DEFAULT_HUB_RING_CAPACITY",
            int(DEFAULT_HUB_RING_CAPACITY.into()),
        ),
        ("FREE_LIST_END", int(FREE_LIST_END.into())),
        ("NO_OWNER", int(NO_OWNER.into())),
        ("HOST_OWNER", int(HOST_OWNER.into())),
        ("KEPT_SLOT_MARK", int(KEPT_SLOT_MARK.into())),
        ("SLOT_INDEX_BITS", int(SLOT_INDEX_BITS.into())),
        ("SLOT_INDEX_LIMIT", int(SLOT_INDEX_LIMIT.into())),
        ("MAX_ENCODABLE_CLASS", int(MAX_ENCODABLE_CLASS.into())),
        ("INLINE_PAYLOAD_SIZE", int(INLINE_PAYLOAD_SIZE as u128)),
        ("INLINE_PAYLOAD_SLOT", int(INLINE_PAYLOAD_SLOT.into())),
        ("NO_DEADLINE", int(NO_DEADLINE.into())),
        ("PEER_FLAG_ACTIVE", int(PEER_FLAG_ACTIVE.into())),
        ("PEER_FLAG_DYING", int(PEER_FLAG_DYING.into())),
        ("PEER_FLAG_DEAD", int(PEER_FLAG_DEAD.into())),
        ("PEER_FLAG_RESERVED", int(PEER_FLAG_RESERVED.into())),
        ("SlotState::Free", int(SlotState::Free as u128)),
        ("SlotState::Allocated", int(SlotState::Allocated as u128)),
        ("SlotState::InFlight", int(SlotState::InFlight as u128)),
    ]
}

/// `(name, value)` of every row of a table of constants (first two cells).
pub fn constant_rows(table: &Table) -> Vec<(usize, String, Value)> {
    table
        .rows
        .iter()
        .filter(|(_, cells)| cells.len() >= 2)
        .map(|(line, cells)| {
            (
                *line,
                cells[0].trim_matches('`').to_owned(),
                parse_value(&cells[1]),
            )
        })
        .collect()
}

/// Compare a table of constants with `truth`: every row known and equal, every constant there.
pub fn compare_constants(
    table: &Table,
    truth: &[(&str, Value)],
    problems: &mut Vec<(usize, String)>,
) -> usize {
    let rows = constant_rows(table);
    for (line, name, value) in &rows {
        match truth.iter().find(|(n, _)| n == name) {
            None => problems.push((*line, format!("`{name}` is no constant the check knows"))),
            Some((_, real)) if real != value => problems.push((
                *line,
                format!("`{name}` is {value} here, {real} in the code"),
            )),
            Some(_) => {}
        }
    }
    let line = table.heading.as_ref().map_or(0, |h| h.line);
    for (name, _) in truth {
        if !rows.iter().any(|(_, n, _)| n == name) {
            problems.push((line, format!("the constants table lacks `{name}`")));
        }
    }
    rows.len()
}

/// Cell `i` of a row as written, for messages.
fn cell(cells: &[String], i: usize) -> &str {
    cells.get(i).map_or("(nothing)", String::as_str)
}

fn cell_number(cell: &str) -> Option<u128> {
    match parse_value(cell) {
        Value::Int(n) => Some(n),
        Value::Text(_) => None,
    }
}

/// Compare a struct table with the compiler's layout; the rows it checked.
fn compare_struct(table: &Table, real: &Struct, problems: &mut Vec<(usize, String)>) -> usize {
    let heading_line = table.heading.as_ref().map_or(0, |h| h.line);
    if let Some(heading) = &table.heading {
        let claims = format!("{} bytes, aligned to {}", real.size, real.align);
        if !heading.text.contains(&claims) {
            problems.push((
                heading.line,
                format!("the heading of `{}` should say \"{claims}\"", real.name),
            ));
        }
    }
    // The bytes no field covers: the struct's alignment padding.
    let mut gaps = Vec::new();
    let mut fields = real.fields.clone();
    fields.sort_by_key(|f| f.offset);
    let mut end = 0;
    for field in &fields {
        if field.offset > end {
            gaps.push((end, field.offset));
        }
        end = end.max(field.offset + field.size);
    }
    if end < real.size {
        gaps.push((end, real.size));
    }
    let mut covered = Vec::new();
    for (line, cells) in &table.rows {
        let (Some(offset), Some(size), Some(name)) = (
            cells.first().and_then(|c| cell_number(c)),
            cells.get(1).and_then(|c| cell_number(c)),
            cells.get(2),
        ) else {
            problems.push((
                *line,
                format!("a row of `{}` without offset, size and field", real.name),
            ));
            continue;
        };
        let (offset, size) = (offset as usize, size as usize);
        let mut bad = |what: String| problems.push((*line, format!("`{}`: {what}", real.name)));
        if name == "(alignment)" {
            if !gaps.contains(&(offset, offset + size)) {
                bad(format!(
                    "no alignment padding at {offset}..{}; the padding is {gaps:?}",
                    offset + size
                ));
            }
        } else {
            let name = name.trim_matches('`');
            let (field, range) = match name.split_once('[') {
                Some((field, range)) => (field, Some(range.trim_end_matches(']'))),
                None => (name, None),
            };
            match real.fields.iter().find(|f| f.name == field) {
                None => bad(format!("`{field}` is no field of the struct")),
                Some(f) => {
                    let (start, stop) = match range.and_then(|r| r.split_once("..")) {
                        Some((a, b)) => (a.parse().unwrap_or(usize::MAX), b.parse().unwrap_or(0)),
                        None if range.is_some() => (usize::MAX, 0),
                        None => (0, f.size),
                    };
                    if start >= stop || stop > f.size {
                        bad(format!(
                            "`{name}`: {start}..{stop} is not a range inside the field's {} bytes",
                            f.size
                        ));
                    } else if offset != f.offset + start || size != stop - start {
                        bad(format!(
                            "`{name}` is at {offset}, {size} bytes here; the code puts it at {}, {} bytes",
                            f.offset + start,
                            stop - start
                        ));
                    }
                }
            }
        }
        covered.push((offset, offset + size, *line));
    }
    covered.sort();
    let mut at = 0;
    for &(start, stop, line) in &covered {
        if start > at {
            problems.push((
                line,
                format!("`{}`: bytes {at}..{start} are in no row", real.name),
            ));
        } else if start < at {
            problems.push((
                line,
                format!("`{}`: bytes {start}..{at} are in two rows", real.name),
            ));
        }
        at = at.max(stop);
    }
    if at != real.size {
        problems.push((
            heading_line,
            format!(
                "`{}`: the rows end at {at}, the struct at {}",
                real.name, real.size
            ),
        ));
    }
    table.rows.len()
}

/// The regions of a segment by the names the segment table uses: `(offset, size)`.
pub fn regions(layout: &SegmentLayout) -> BTreeMap<String, (usize, Option<usize>)> {
    use hub_layout::{HUB_SIZE_CLASSES, NUM_SIZE_CLASSES};
    let mut map = BTreeMap::new();
    let peers = usize::from(layout.max_peers);
    map.insert("header".into(), (0, Some(size_of::<HubHeader>())));
    map.insert(
        "peer_table".into(),
        (
            layout.offsets.peer_table,
            Some(peers * size_of::<PeerEntry>()),
        ),
    );
    map.insert(
        "ring_region".into(),
        (
            layout.offsets.ring_region,
            Some(2 * peers * layout.ring_size()),
        ),
    );
    for peer in 0..layout.max_peers {
        let entry = (layout.peer_entry_offset(peer), Some(size_of::<PeerEntry>()));
        map.insert(format!("peer_entry({peer})"), entry);
        let ring = Some(layout.ring_size());
        map.insert(
            format!("send_ring({peer})"),
            (layout.send_ring_offset(peer), ring),
        );
        map.insert(
            format!("recv_ring({peer})"),
            (layout.recv_ring_offset(peer), ring),
        );
    }
    map.insert(
        "size_class_headers".into(),
        (
            layout.offsets.size_class_headers,
            Some(NUM_SIZE_CLASSES * size_of::<SizeClassHeader>()),
        ),
    );
    map.insert(
        "extent_region".into(),
        (
            layout.offsets.extent_region,
            Some(layout.initial_size() - layout.offsets.extent_region),
        ),
    );
    for class in 0..HUB_SIZE_CLASSES.len() {
        map.insert(
            format!("class_header({class})"),
            (
                layout.class_header_offset(class),
                Some(size_of::<SizeClassHeader>()),
            ),
        );
        map.insert(
            format!("extent({class}, 0)"),
            (
                layout.initial_extent_offset(class),
                Some(layout.extent_geometry(class).size),
            ),
        );
    }
    map.insert("initial_size".into(), (layout.initial_size(), None));
    map.insert("max_size".into(), (layout.max_size(), None));
    map
}

fn compare_segment(
    table: &Table,
    layout: &SegmentLayout,
    problems: &mut Vec<(usize, String)>,
) -> usize {
    let regions = regions(layout);
    for (line, cells) in &table.rows {
        let name = cells.first().map_or("", |c| c.trim_matches('`'));
        let Some(&(offset, size)) = regions.get(name) else {
            problems.push((*line, format!("`{name}` is no region the check knows")));
            continue;
        };
        let found_offset = cells.get(1).and_then(|c| cell_number(c));
        let found_size = cells.get(2).and_then(|c| cell_number(c));
        if found_offset != Some(offset as u128) {
            problems.push((
                *line,
                format!(
                    "`{name}` is at {offset} in the code, not {}",
                    cell(cells, 1)
                ),
            ));
        }
        if let Some(size) = size
            && found_size != Some(size as u128)
        {
            problems.push((
                *line,
                format!(
                    "`{name}` is {size} bytes in the code, not {}",
                    cell(cells, 2)
                ),
            ));
        }
    }
    table.rows.len()
}

fn compare_classes(
    table: &Table,
    layout: &SegmentLayout,
    problems: &mut Vec<(usize, String)>,
) -> usize {
    use hub_layout::HUB_SIZE_CLASSES;
    let mut seen = BTreeSet::new();
    for (line, cells) in &table.rows {
        let numbers: Vec<Option<u128>> = cells.iter().map(|c| cell_number(c)).collect();
        let Some(Some(class)) = numbers.first().copied() else {
            problems.push((*line, "a size class row without a class".into()));
            continue;
        };
        let class = class as usize;
        if class >= HUB_SIZE_CLASSES.len() {
            problems.push((*line, format!("there is no size class {class}")));
            continue;
        }
        seen.insert(class);
        let slots = layout.slots_per_extent(class);
        let geometry = layout.extent_geometry(class);
        let real = [
            ("slot_size", u128::from(HUB_SIZE_CLASSES[class].0)),
            ("slots_per_extent", u128::from(slots)),
            ("extent_slot_shift", u128::from(slots.trailing_zeros())),
            ("data_offset", u128::from(geometry.data_offset)),
            ("extent size", geometry.size as u128),
        ];
        for (i, (what, value)) in real.iter().enumerate() {
            if numbers.get(i + 1).copied().flatten() != Some(*value) {
                problems.push((
                    *line,
                    format!(
                        "class {class}: {what} is {value} in the code, not {}",
                        cell(cells, i + 1)
                    ),
                ));
            }
        }
    }
    let line = table.heading.as_ref().map_or(0, |h| h.line);
    for class in 0..HUB_SIZE_CLASSES.len() {
        if !seen.contains(&class) {
            problems.push((line, format!("the size class table lacks class {class}")));
        }
    }
    table.rows.len()
}

/// The rows of a Markdown table in a doc comment (`//! | a | b |`) after a heading `# title`.
fn doc_comment_table(source: &str, title: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut under = false;
    for line in source.lines() {
        let Some(text) = line.trim().strip_prefix("//!") else {
            continue;
        };
        let text = text.trim();
        if let Some(heading) = text.strip_prefix("# ") {
            under = heading.trim().starts_with(title);
            continue;
        }
        if under && text.starts_with('|') {
            let cells = split_row(text);
            if !cells.iter().all(|c| c.chars().all(|ch| "-:".contains(ch))) {
                rows.push(cells);
            }
        }
    }
    // The first row is the header.
    rows.into_iter().skip(1).collect()
}

fn compare_versions(
    table: &Table,
    layout_docs: &str,
    problems: &mut Vec<(usize, String)>,
) -> usize {
    let theirs = doc_comment_table(layout_docs, "Versions");
    let line = table.heading.as_ref().map_or(0, |h| h.line);
    let ours: Vec<&Vec<String>> = table.rows.iter().map(|(_, cells)| cells).collect();
    if theirs.is_empty() {
        problems.push((line, "hub-layout's crate docs have no version table".into()));
    } else if ours.len() != theirs.len() || ours.iter().zip(&theirs).any(|(a, b)| *a != b) {
        problems.push((
            line,
            "the version table differs from hub-layout's (crates/hub-layout/src/lib.rs)".into(),
        ));
    }
    let current = format!(
        "{}.{}",
        hub_layout::HUB_PROTOCOL_VERSION >> 16,
        hub_layout::HUB_PROTOCOL_VERSION & 0xFFFF
    );
    if ours.last().and_then(|cells| cells.first()) != Some(&current) {
        problems.push((
            line,
            format!("the last version listed should be HUB_PROTOCOL_VERSION, {current}"),
        ));
    }
    table.rows.len()
}

/// Compare every marked table with hub-layout; `(rows checked, (line, problem))`.
pub fn check_tables(doc: &Doc, layout_docs: &str) -> (usize, Vec<(usize, String)>) {
    let mut problems = Vec::new();
    let mut rows = 0;
    let mut kinds = BTreeSet::new();
    let structs = structs();
    for table in &doc.tables {
        let line = table.heading.as_ref().map_or(0, |h| h.line);
        let words: Vec<&str> = table.kind.iter().map(String::as_str).collect();
        kinds.insert(words.join(" "));
        rows += match words.as_slice() {
            ["struct", name] => match structs.iter().find(|s| s.name == *name) {
                Some(real) => compare_struct(table, real, &mut problems),
                None => {
                    problems.push((line, format!("`{name}` is no struct of hub-layout")));
                    0
                }
            },
            ["constants"] => compare_constants(table, &layout_constants(), &mut problems),
            // Checked by this module's tests, which link hub-transport and hub-alloc.
            ["transport-constants"] => 0,
            ["size-classes"] => match SegmentLayout::new(1, 1) {
                Ok(layout) => compare_classes(table, &layout, &mut problems),
                Err(error) => {
                    problems.push((line, format!("no layout: {error}")));
                    0
                }
            },
            ["segment", peers, capacity] => match (peers.parse(), capacity.parse()) {
                (Ok(peers), Ok(capacity)) => match SegmentLayout::new(peers, capacity) {
                    Ok(layout) => compare_segment(table, &layout, &mut problems),
                    Err(error) => {
                        problems
                            .push((line, format!("no layout for {peers}, {capacity}: {error}")));
                        0
                    }
                },
                _ => {
                    problems.push((
                        line,
                        "`segment` takes the peers and the ring capacity".into(),
                    ));
                    0
                }
            },
            ["versions"] => compare_versions(table, layout_docs, &mut problems),
            _ => {
                problems.push((line, format!("unknown table check `{}`", words.join(" "))));
                0
            }
        };
    }
    let mut wanted: Vec<String> = structs
        .iter()
        .map(|s| format!("struct {}", s.name))
        .collect();
    wanted.extend(
        [
            "constants",
            "transport-constants",
            "size-classes",
            "versions",
        ]
        .map(String::from),
    );
    for want in wanted {
        if !kinds.contains(&want) {
            problems.push((0, format!("no table marked `<!-- check: {want} -->`")));
        }
    }
    if !kinds.iter().any(|k| k.starts_with("segment ")) {
        problems.push((0, "no table marked `<!-- check: segment P C -->`".into()));
    }
    (rows, problems)
}

/// `cargo xtask protocol`: run the checks, print every problem and a summary; whether all
/// passed.
pub fn run(root: &Path, out: &mut dyn std::io::Write) -> bool {
    let (checked, problems) = check(root);
    for problem in &problems {
        let _ = writeln!(out, "{problem}");
    }
    let _ = writeln!(
        out,
        "protocol: {} citations in {} files, {} table rows against hub-layout: {}",
        checked.citations,
        checked.files,
        checked.rows,
        if problems.is_empty() {
            "ok".to_owned()
        } else {
            format!("{} problems", problems.len())
        }
    );
    problems.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(n: u32) -> String {
        format!("R{n}")
    }

    fn doc() -> Doc {
        Doc::parse(&format!(
            "# Title\n\n## 1. Conventions\n\n### 1.1 Machine\n\n## {}. Creation\n\n\
             ## 2. Layout\n\n```text\n## {}. not a heading\n```\n",
            rule(1),
            rule(9)
        ))
    }

    #[test]
    fn headings_give_rules_sections_and_anchors() {
        let doc = doc();
        assert_eq!(doc.rules, BTreeSet::from([1]));
        assert_eq!(
            doc.sections,
            BTreeSet::from(["1".to_owned(), "1.1".to_owned(), "2".to_owned()])
        );
        assert!(doc.anchors.contains("11-machine"));
        assert!(
            doc.anchors
                .contains(&format!("{}-creation", rule(1).to_lowercase()))
        );
        assert_eq!(
            slug("R4. The host's private truth"),
            format!("{}-the-hosts-private-truth", rule(4).to_lowercase())
        );
        assert_eq!(
            slug("2.2 `HubHeader`: 256 bytes, aligned to 64"),
            "22-hubheader-256-bytes-aligned-to-64"
        );
    }

    #[test]
    fn citations_resolve_or_are_reported() {
        let doc = doc();
        let mut found = 0;
        let ok = format!(
            "see {} and (PROTOCOL.md {SECTION}1.1), {ANCHORED}11-machine",
            rule(1)
        );
        assert_eq!(
            check_line(&doc, &ok, false, &mut found),
            Vec::<String>::new()
        );
        assert_eq!(found, 3);
        // Not rule numbers: inside words, or no digits.
        assert!(check_line(&doc, "XR9 R9x R_ R", false, &mut found).is_empty());
        let bad = [
            format!("{} says", rule(2)),
            format!("PROTOCOL.md {SECTION}7"),
            format!("{ANCHORED}nowhere"),
            format!("{SECTION}1 alone"),
            format!("{DESIGN_DOC}.md"),
        ];
        for line in &bad {
            assert_eq!(check_line(&doc, line, false, &mut found).len(), 1, "{line}");
        }
        // In the document itself a bare section sign and a local link are its own.
        assert!(
            check_line(
                &doc,
                &format!("{SECTION}2 and [x](#2-layout)"),
                true,
                &mut found
            )
            .is_empty()
        );
        assert_eq!(check_line(&doc, "[x](#3-none)", true, &mut found).len(), 1);
    }

    fn table(kind: &str, heading: &str, rows: &[&str]) -> Doc {
        let mut text =
            format!("### {heading}\n\n<!-- check: {kind} -->\n| a | b | c |\n|---|---|---|\n");
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        Doc::parse(&text)
    }

    fn struct_problems(heading: &str, rows: &[&str]) -> Vec<String> {
        let doc = table("struct HubSlotMeta", heading, rows);
        let real = structs()
            .into_iter()
            .find(|s| s.name == "HubSlotMeta")
            .unwrap();
        let mut problems = Vec::new();
        compare_struct(&doc.tables[0], &real, &mut problems);
        problems.into_iter().map(|(_, what)| what).collect()
    }

    #[test]
    fn a_struct_table_must_match_the_compiler() {
        let good = [
            "| 0 | 4 | `generation` |",
            "| 4 | 4 | `state` |",
            "| 8 | 4 | `next_free` |",
            "| 12 | 4 | `owner_peer` |",
        ];
        let heading = "2.8 `HubSlotMeta`: 16 bytes, aligned to 4";
        assert_eq!(struct_problems(heading, &good), Vec::<String>::new());
        let mut wrong = good;
        wrong[2] = "| 8 | 8 | `next_free` |";
        assert!(!struct_problems(heading, &wrong).is_empty());
        wrong = good;
        wrong[3] = "| 12 | 4 | `owner` |";
        assert!(!struct_problems(heading, &wrong).is_empty());
        assert!(
            !struct_problems(heading, &good[..3]).is_empty(),
            "a field left out"
        );
        assert!(!struct_problems("`HubSlotMeta`: 32 bytes", &good).is_empty());
        let split = [
            "| 0 | 4 | `generation` |",
            "| 4 | 4 | `state` |",
            "| 8 | 2 | `next_free[0..2]` |",
            "| 10 | 2 | `next_free[2..4]` |",
            "| 12 | 4 | `owner_peer` |",
        ];
        assert_eq!(struct_problems(heading, &split), Vec::<String>::new());
    }

    #[test]
    fn constants_and_regions_must_match() {
        let doc = table("constants", "Constants", &["| `MAX_PEERS` | 33 |"]);
        let mut problems = Vec::new();
        compare_constants(&doc.tables[0], &layout_constants(), &mut problems);
        assert!(
            problems
                .iter()
                .any(|(_, p)| p.contains("`MAX_PEERS` is 33"))
        );
        assert!(problems.iter().any(|(_, p)| p.contains("lacks `NO_OWNER`")));
        assert_eq!(parse_value("`0xFFFF_FFFF`"), Value::Int(0xFFFF_FFFF));
        assert_eq!(parse_value("1,064,128"), Value::Int(1_064_128));
        assert_eq!(
            parse_value("`RAPAHUB\\0`"),
            Value::Text("RAPAHUB\\0".into())
        );

        let layout = SegmentLayout::new(32, 256).unwrap();
        let doc = table(
            "segment 32 256",
            "Regions",
            &[
                "| `peer_table` | 256 | 2,048 |",
                "| `ring_region` | 2,305 | 1,060,864 |",
            ],
        );
        let mut problems = Vec::new();
        compare_segment(&doc.tables[0], &layout, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    /// The document in the repository passes: every citation resolves, every table matches.
    #[test]
    fn the_protocol_document_is_consistent() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let (checked, problems) = check(root);
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(checked.citations > 100 && checked.rows > 50, "{checked:?}");
    }

    /// The values hub-transport and hub-alloc give the transport's own words: the
    /// `transport-constants` table, and the padding words of the header and entry tables.
    #[test]
    fn transport_words_match_the_code() {
        use hub_transport::{pad, signal};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let doc = Doc::parse(&fs::read_to_string(root.join(PROTOCOL)).unwrap());
        let int = |n: u128| Value::Int(n);
        let truth = [
            ("signal::WAITER_BIT", int(signal::WAITER_BIT.into())),
            ("signal::SEQUENCE_STEP", int(signal::SEQUENCE_STEP.into())),
            ("hub_alloc::WAITER_BIT", int(hub_alloc::WAITER_BIT.into())),
            (
                "hub_alloc::SEQUENCE_STEP",
                int(hub_alloc::SEQUENCE_STEP.into()),
            ),
            ("pad::HOST_PID", int(pad::HOST_PID as u128)),
            ("pad::HOST_STATE", int(pad::HOST_STATE as u128)),
            ("pad::HOST_BELL", int(pad::HOST_BELL as u128)),
            ("pad::SIZE_LIMIT", int(pad::SIZE_LIMIT as u128)),
            ("pad::HEARTBEAT_MS", int(pad::HEARTBEAT_MS as u128)),
            ("pad::PEER_PID", int(pad::PEER_PID as u128)),
            ("pad::READY_WAITERS", int(pad::READY_WAITERS as u128)),
            ("pad::READY_PEER", int(pad::READY_PEER.into())),
            ("pad::READY_HOST", int(pad::READY_HOST.into())),
            ("pad::READY_BRIDGED", int(pad::READY_BRIDGED.into())),
            ("TICKET_ENV", Value::Text(hub_transport::TICKET_ENV.into())),
        ];
        let table = doc
            .tables
            .iter()
            .find(|t| t.kind == ["transport-constants"])
            .expect("a transport-constants table");
        let mut problems = Vec::new();
        compare_constants(table, &truth, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");

        // Each padding word the transport and the allocator use has a row of its own, of its
        // size, in the struct's table. The journals are where hub-alloc's `for_hub` puts them:
        // the first word of the header's `_pad2` and of an entry's `_pad`.
        let rows = |name: &str| -> Vec<(u128, u128)> {
            let table = doc
                .tables
                .iter()
                .find(|t| t.kind == ["struct", name])
                .expect("the struct's table");
            table
                .rows
                .iter()
                .filter_map(|(_, cells)| Some((cell_number(&cells[0])?, cell_number(&cells[1])?)))
                .collect()
        };
        let header = rows("HubHeader");
        let header_journal = core::mem::offset_of!(HubHeader, _pad2);
        for (offset, size) in [
            (header_journal, 4),
            (pad::HOST_PID, 4),
            (pad::HOST_STATE, 4),
            (pad::HOST_BELL, 4),
            (pad::SIZE_LIMIT, 8),
            (pad::HEARTBEAT_MS, 4),
        ] {
            assert!(
                header.contains(&(offset as u128, size)),
                "HubHeader {offset}, {size}"
            );
        }
        let entry = rows("PeerEntry");
        let entry_journal = core::mem::offset_of!(PeerEntry, _pad);
        for (offset, size) in [
            (entry_journal, 4),
            (pad::PEER_PID, 4),
            (pad::READY_WAITERS, 4),
        ] {
            assert!(
                entry.contains(&(offset as u128, size)),
                "PeerEntry {offset}, {size}"
            );
        }
    }
}
