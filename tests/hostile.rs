//! Hostile model files: thousands of seeded mutants of small valid models (byte flips, truncation, header
//! length edits, and structured edits of the safetensors header, the tensors and the graph JSON) must each be
//! rejected with an `Error`, or load, plan and run, but never panic or ask for an absurd allocation.
//!
//! A failure prints the base model, seed, mutant index and the mutations applied, so it can be replayed.
//! Longer local runs: `HOSTILE_SEED=7 HOSTILE_SCALE=10 cargo test --release --test hostile`.

use resedge::format;
use resedge::graph::{Activation, Graph, Input, Model, Node, Op, Window};
use resedge::plan::{passes, Plan, PlanOptions};
use resedge::quant::{lower_to_int8, qparams_from_ranges, ActivationScheme};
use resedge::tensor::Tensor;
use resedge::{zoo, Error};
use serde_json::{json, Map, Value};

mod common;
use common::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

// ---------------------------------------------------------------------------------------------------------
// Absurd-allocation watch: records the largest request above the limit made by the current thread.

/// Nothing a small model legitimately needs comes near this (arenas are capped at 64 MiB below).
const ABSURD_ALLOC: usize = 256 << 20;

thread_local! {
    static BIGGEST: Cell<usize> = const { Cell::new(0) };
}

struct Watch;

fn note(size: usize) {
    if size > ABSURD_ALLOC {
        let _ = BIGGEST.try_with(|b| b.set(b.get().max(size)));
    }
}

unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Watch = Watch;

// ---------------------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------------------
// The container, decoded: header JSON + data, and a tensor table that repacks into a valid file.

fn split(bytes: &[u8]) -> Option<(Map<String, Value>, Vec<u8>)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    Some((header.as_object()?.clone(), bytes[8 + n..].to_vec()))
}

fn join(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// A tensor as (dtype string, shape, bytes), repacked with fresh contiguous offsets by [`pack`].
type Table = BTreeMap<String, (String, Vec<u64>, Vec<u8>)>;

fn table(header: &Map<String, Value>, data: &[u8]) -> Option<Table> {
    let mut t = Table::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype")?.as_str()?.to_string();
        let shape: Vec<u64> = info.get("shape")?.as_array()?.iter().map(|d| d.as_u64()).collect::<Option<_>>()?;
        let off = info.get("data_offsets")?.as_array()?;
        let (s, e) = (off.first()?.as_u64()? as usize, off.get(1)?.as_u64()? as usize);
        // Only a consistent tensor is worth repacking (its size then also bounds the shape).
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        if numel.checked_mul(dtype_size(&dtype) as u64)? != e.checked_sub(s)? as u64 {
            return None;
        }
        t.insert(name.clone(), (dtype, shape, data.get(s..e)?.to_vec()));
    }
    Some(t)
}

fn pack(meta: &Value, t: &Table) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), meta.clone());
    let mut data = Vec::new();
    for (name, (dtype, shape, bytes)) in t {
        let s = data.len();
        data.extend_from_slice(bytes);
        header.insert(name.clone(), json!({ "dtype": dtype, "shape": shape, "data_offsets": [s, data.len()] }));
    }
    join(&header, &data)
}

fn dtype_size(d: &str) -> usize {
    match d {
        "F32" | "I32" => 4,
        "F16" => 2,
        _ => 1,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Interesting values.

fn interesting_uint(rng: &mut Rng) -> Value {
    let v: &[u64] = &[
        0,
        1,
        2,
        3,
        4,
        7,
        63,
        64,
        127,
        128,
        255,
        256,
        1000,
        65535,
        1 << 20,
        1 << 24,
        (1 << 24) + 1,
        1 << 31,
        (1 << 32) - 1,
        1 << 32,
        1 << 40,
        1 << 62,
        u64::MAX,
    ];
    json!(*rng.pick(v))
}

fn interesting_number(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => interesting_uint(rng),
        1 => json!(*rng.pick(&[-1i64, -2, -128, -129, i32::MIN as i64, i64::MIN, 300, -300, 62, 63, 100])),
        2 => json!(*rng.pick(&[0.5f64, -0.5, 1e-45, 1e-30, 1e30, -1e30, 3.5e38, -3.5e38, 1e300, 0.0, -0.0])),
        _ => json!(rng.below(40)),
    }
}

fn interesting_i32(rng: &mut Rng) -> i32 {
    *rng.pick(&[0, 1, -1, 2, 30, 31, 32, 61, 62, 63, 64, 100, -5, 1 << 30, i32::MAX, i32::MIN, -(1 << 30), 127, -128])
}

// ---------------------------------------------------------------------------------------------------------
// Generic JSON tree edits (on the graph JSON): pick a random leaf or container and change it.

/// Every path (object keys / array indices) in `v`, containers included.
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                prefix.push(json!(k));
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                prefix.push(json!(i));
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'v>(v: &'v mut Value, path: &[Value]) -> &'v mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(s) => &mut v[s.as_str()],
        Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

fn path_str(p: &[Value]) -> String {
    p.iter().map(|k| k.to_string().trim_matches('"').to_string()).collect::<Vec<_>>().join(".")
}

/// Value names in the graph (input and node names) plus a few that exist nowhere.
fn names(g: &Value) -> Vec<String> {
    let mut v = vec!["ghost".to_string(), String::new(), g["input"]["name"].as_str().unwrap_or("input").to_string()];
    if let Some(nodes) = g["graph"]["nodes"].as_array() {
        v.extend(nodes.iter().filter_map(|n| n["name"].as_str().map(str::to_string)));
    }
    v
}

const OPS: &[&str] = &[
    "Conv",
    "BatchNorm",
    "Act",
    "Add",
    "MaxPool",
    "AvgPool",
    "GlobalAvgPool",
    "Linear",
    "Flatten",
    "Softmax",
    "ShortcutA",
    "Quantize",
    "Dequantize",
    "Bogus",
];

fn random_activation(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => json!({"kind": "none"}),
        1 => json!({"kind": "relu"}),
        2 => json!({"kind": "relu6"}),
        3 => json!({"kind": "clip", "min": 5.0, "max": -5.0}),
        4 => json!({"kind": "clip", "min": interesting_number(rng), "max": interesting_number(rng)}),
        _ => json!({"kind": "gelu"}),
    }
}

fn random_qparams(rng: &mut Rng) -> Value {
    let dtype = *rng.pick(&["i8", "u8", "i16"]);
    let scale = if rng.chance(1.0 / 2.0) { json!(0.05) } else { interesting_number(rng) };
    let zp = if rng.chance(1.0 / 2.0) { json!(rng.below(20) as i64 - 10) } else { interesting_number(rng) };
    json!({"dtype": dtype, "scale": scale, "zero_point": zp})
}

/// One structured edit of the model JSON (`{name, graph: {input, nodes, output}, preprocess, labels}`).
fn mutate_graph(rng: &mut Rng, m: &mut Value) -> String {
    let all = names(m);
    let nodes_len = m["graph"]["nodes"].as_array().map_or(0, Vec::len);
    if nodes_len == 0 {
        // Nothing left to edit node by node (earlier edits removed them): damage the graph input instead.
        m["graph"]["input"]["shape"] = json!([1]);
        return "input shape = [1] (no nodes)".into();
    }
    let ni = rng.below(nodes_len);
    let node_name = m["graph"]["nodes"][ni]["name"].as_str().unwrap_or("?").to_string();
    match rng.below(22) {
        // Any numeric leaf anywhere (kernel, stride, padding, channels, shapes, eps, scales, zero points...).
        0..=4 => {
            let mut ps = Vec::new();
            paths(m, &mut Vec::new(), &mut ps);
            ps.retain(|p| at(m, p).is_number());
            if ps.is_empty() {
                return "no numbers".into();
            }
            let p = rng.pick(&ps).clone();
            let v = interesting_number(rng);
            *at(m, &p) = v.clone();
            format!("graph {} = {v}", path_str(&p))
        }
        // A numeric field of one node set to something huge or degenerate.
        5 | 6 => {
            let n = &mut m["graph"]["nodes"][ni];
            let key = *rng.pick(&[
                "out_channels",
                "out_features",
                "groups",
                "stride",
                "pad_before",
                "pad_after",
                "kernel",
                "padding",
                "dilation",
                "eps",
            ]);
            let v = interesting_uint(rng);
            let v = match key {
                "kernel" | "dilation" => json!([v, v]),
                "padding" => json!([v, 0, v, 0]),
                "stride" if n["op"] != "ShortcutA" => json!([v, 1]),
                _ => v,
            };
            n[key] = v.clone();
            format!("node {node_name}: {key} = {v}")
        }
        // Inputs: unknown, self, forward reference, wrong arity.
        7 | 8 => {
            let n = &mut m["graph"]["nodes"][ni];
            let Some(inputs) = n["inputs"].as_array_mut() else { return "no inputs".into() };
            match rng.below(4) {
                0 if !inputs.is_empty() => {
                    let i = rng.below(inputs.len());
                    let v = rng.pick(&all).clone();
                    inputs[i] = json!(v);
                    format!("node {node_name}: input {i} = {v:?}")
                }
                1 => {
                    inputs.push(json!(rng.pick(&all)));
                    format!("node {node_name}: extra input")
                }
                2 => {
                    inputs.pop();
                    format!("node {node_name}: one input fewer")
                }
                _ => {
                    inputs.clear();
                    inputs.push(json!(node_name));
                    format!("node {node_name}: reads itself")
                }
            }
        }
        // Names: duplicate another node's, the graph input's, or empty.
        9 => {
            let v = rng.pick(&all).clone();
            m["graph"]["nodes"][ni]["name"] = json!(v);
            format!("node {node_name} renamed {v:?}")
        }
        // Op swapped (keeping the other fields) or flags toggled.
        10 => {
            let op = *rng.pick(OPS);
            m["graph"]["nodes"][ni]["op"] = json!(op);
            format!("node {node_name}: op = {op}")
        }
        11 => {
            let key = *rng.pick(&["bias", "residual", "count_include_pad"]);
            let n = &mut m["graph"]["nodes"][ni];
            let v = !n[key].as_bool().unwrap_or(false);
            n[key] = json!(v);
            format!("node {node_name}: {key} = {v}")
        }
        12 => {
            let a = random_activation(rng);
            m["graph"]["nodes"][ni]["activation"] = a.clone();
            format!("node {node_name}: activation = {a}")
        }
        // Quantization of a node's output: added, changed, removed.
        13 | 14 => {
            let n = &mut m["graph"]["nodes"][ni];
            if rng.chance(1.0 / 4.0) {
                n.as_object_mut().map(|o| o.remove("output_q"));
                format!("node {node_name}: output_q removed")
            } else {
                let q = random_qparams(rng);
                n["output_q"] = q.clone();
                format!("node {node_name}: output_q = {q}")
            }
        }
        // Node list surgery.
        15 => {
            if let Some(nodes) = m["graph"]["nodes"].as_array_mut() {
                if !nodes.is_empty() {
                    nodes.remove(ni);
                }
            }
            format!("node {node_name} deleted")
        }
        16 => {
            let nodes = m["graph"]["nodes"].as_array_mut().unwrap();
            if !nodes.is_empty() {
                let n = nodes[ni].clone();
                let at = rng.below(nodes.len() + 1);
                nodes.insert(at, n);
            }
            format!("node {node_name} duplicated")
        }
        17 => {
            let nodes = m["graph"]["nodes"].as_array_mut().unwrap();
            let j = rng.below(nodes.len());
            if !nodes.is_empty() {
                nodes.swap(ni, j);
            }
            format!("nodes {ni} and {j} swapped")
        }
        18 => {
            if rng.chance(1.0 / 2.0) {
                m["graph"]["nodes"] = json!([]);
                "all nodes removed".into()
            } else {
                m["graph"]["nodes"].as_array_mut().unwrap().reverse();
                "node order reversed".into()
            }
        }
        // Graph input shape and output.
        19 => {
            let shapes = [
                json!([]),
                json!([3]),
                json!([0]),
                json!([3, 0, 8]),
                json!([0, 8, 8]),
                json!([3, 8, 8, 8]),
                json!([1 << 24, 1 << 24, 1 << 24]),
                json!([1u64 << 40, 1, 1]),
                json!([3, 1, 1]),
                json!([3, 1 << 20, 1 << 20]),
                json!([3, 64, 64]),
            ];
            let s = rng.pick(&shapes).clone();
            m["graph"]["input"]["shape"] = s.clone();
            format!("input shape = {s}")
        }
        20 => {
            let v = rng.pick(&all).clone();
            m["graph"]["output"] = json!(v);
            format!("output = {v:?}")
        }
        // A key removed from a random object.
        _ => {
            let mut ps = Vec::new();
            paths(m, &mut Vec::new(), &mut ps);
            ps.retain(|p| matches!(p.last(), Some(Value::String(_))));
            if ps.is_empty() {
                return "no keys".into();
            }
            let p = rng.pick(&ps).clone();
            let (last, parent) = p.split_last().unwrap();
            at(m, parent).as_object_mut().map(|o| o.remove(last.as_str().unwrap()));
            format!("graph key {} removed", path_str(&p))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Mutations of the whole file.

fn tensor_names(header: &Map<String, Value>) -> Vec<String> {
    header.keys().filter(|k| *k != "__metadata__").cloned().collect()
}

/// Raw edits of the safetensors header (offsets, shapes, dtypes) without repacking: mostly container errors.
fn mutate_header(rng: &mut Rng, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    let (mut header, data) = split(bytes)?;
    let names = tensor_names(&header);
    if names.is_empty() {
        return None;
    }
    let name = rng.pick(&names).clone();
    let other = rng.pick(&names).clone();
    let other_off = header[&other]["data_offsets"].clone();
    let info = header.get_mut(&name)?;
    let what = match rng.below(7) {
        0 => {
            let s = rng
                .pick(&[json!([1u64 << 40]), json!([0]), json!([1u64 << 40, 0]), json!([]), json!([u64::MAX, 2])])
                .clone();
            info["shape"] = s.clone();
            format!("shape {s}")
        }
        1 => {
            let d = data.len() as u64;
            let o = rng
                .pick(&[json!([0, d + 1]), json!([d, d + 8]), json!([8, 4]), json!([0, 1u64 << 40]), other_off])
                .clone();
            info["data_offsets"] = o.clone();
            format!("data_offsets {o}")
        }
        2 => {
            let d = *rng
                .pick(&["F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E4M3", "F4", "XX"]);
            info["dtype"] = json!(d);
            format!("dtype {d}")
        }
        3 => {
            info.as_object_mut()?.remove(*rng.pick(&["dtype", "shape", "data_offsets"]));
            "field removed".into()
        }
        4 => {
            header.remove(&name);
            "entry removed (gap in data)".into()
        }
        5 => {
            // A second entry aliasing the same bytes.
            let dup = info.clone();
            header.insert(format!("{name}.alias"), dup);
            "aliased entry".into()
        }
        _ => {
            let meta = header.get_mut("__metadata__")?.as_object_mut()?;
            let v = *rng.pick(&["2", "0", "", "abc", "-1", "1.0", "4294967296", " 1"]);
            if rng.chance(1.0 / 4.0) {
                meta.remove(format::KEY_VERSION);
                return Some((join(&header, &data), "version removed".into()));
            }
            meta.insert(format::KEY_VERSION.into(), json!(v));
            return Some((join(&header, &data), format!("version {v:?}")));
        }
    };
    Some((join(&header, &data), format!("header: tensor {name:?} {what}")))
}

/// Edits of the tensors that keep the container valid (repacked): missing, renamed, retyped, reshaped,
/// and hostile values (int8 -128 weights, out-of-range multipliers and shifts, NaN weights).
fn mutate_tensors(rng: &mut Rng, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    let (header, data) = split(bytes)?;
    let meta = header.get("__metadata__")?.clone();
    let mut t = table(&header, &data)?;
    let names: Vec<String> = t.keys().cloned().collect();
    let name = rng.pick(&names).clone();
    let (dtype, shape, data) = t.get_mut(&name)?;
    let what = match rng.below(8) {
        0 => {
            t.remove(&name);
            "removed".to_string()
        }
        1 => {
            let v = t.remove(&name)?;
            let new = format!("{name}x");
            t.insert(new.clone(), v);
            format!("renamed {new:?}")
        }
        2 => {
            let d = *rng.pick(&["F32", "F16", "I8", "U8", "I32"]);
            let numel: u64 = shape.iter().product();
            *dtype = d.to_string();
            data.resize(numel as usize * dtype_size(d), 0x11);
            format!("dtype {d}")
        }
        3 => {
            // Reshape, data resized to match (new elements are garbage).
            match rng.below(5) {
                0 if !shape.is_empty() => shape[0] += 1,
                1 => shape.push(1),
                2 => {
                    shape.pop();
                }
                3 => *shape = vec![shape.iter().product()],
                _ => shape.reverse(),
            }
            let numel: u64 = shape.iter().product();
            let n = numel as usize * dtype_size(dtype);
            data.resize(n, 0x42);
            format!("shape {shape:?}")
        }
        4 | 5 if dtype == "I8" && !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = 0x80;
            format!("[{i}] = -128")
        }
        4 | 5 if dtype == "I32" && !data.is_empty() => {
            let i = rng.below(data.len() / 4);
            let v = interesting_i32(rng);
            data[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            format!("[{i}] = {v}")
        }
        4 | 5 if dtype == "F32" && !data.is_empty() => {
            let i = rng.below(data.len() / 4);
            let v = *rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e38, -0.0, f32::MIN_POSITIVE / 2.0]);
            data[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            format!("[{i}] = {v}")
        }
        6 => {
            let v = rng.pick(&[i32::MIN, -1, 0, 63, i32::MAX]).to_le_bytes().repeat(data.len() / 4);
            data[..v.len()].copy_from_slice(&v);
            "all i32 words set alike".into()
        }
        _ => {
            data.iter_mut().for_each(|b| *b = rng.next() as u8);
            "random contents".into()
        }
    };
    Some((pack(&meta, &t), format!("tensor {name:?} {what}")))
}

/// Structured edits of the graph JSON and the format version, re-serialized in a valid container.
fn mutate_model_json(rng: &mut Rng, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    let (mut header, data) = split(bytes)?;
    let meta = header.get_mut("__metadata__")?.as_object_mut()?;
    let json_str = meta.get(format::KEY_MODEL)?.as_str()?.to_string();
    let what = match rng.below(30) {
        0 => {
            meta.remove(format::KEY_MODEL);
            "model JSON removed".to_string()
        }
        1 => {
            let cut = rng.below(json_str.len());
            meta.insert(format::KEY_MODEL.into(), json!(json_str[..cut]));
            format!("model JSON cut at {cut}")
        }
        2 => {
            let v = *rng.pick(&["2", "0", "", "x", "99999999999"]);
            meta.insert(format::KEY_VERSION.into(), json!(v));
            format!("version {v:?}")
        }
        _ => {
            let mut m: Value = serde_json::from_str(&json_str).ok()?;
            let n = 1 + rng.below(3);
            let what: Vec<String> = (0..n).map(|_| mutate_graph(rng, &mut m)).collect();
            meta.insert(format::KEY_MODEL.into(), json!(m.to_string()));
            what.join("; ")
        }
    };
    Some((join(&header, &data), what))
}

/// Byte-level damage: bit flips (header-biased), overwrites, truncation, length-field edits, splices.
fn mutate_bytes(rng: &mut Rng, bytes: &[u8]) -> (Vec<u8>, String) {
    let mut b = bytes.to_vec();
    if b.is_empty() {
        return (b, "empty".into());
    }
    let hlen = (u64::from_le_bytes(b.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8])) as usize)
        .saturating_add(8)
        .min(b.len());
    // Positions in the header are as likely as positions in the data.
    let pos = |rng: &mut Rng, len: usize| if rng.chance(1.0 / 2.0) { rng.below(hlen) } else { rng.below(len) };
    match rng.below(6) {
        0 => {
            let k = 1 + rng.below(8);
            let mut at = Vec::new();
            for _ in 0..k {
                let i = pos(rng, b.len());
                b[i] ^= 1 << rng.below(8);
                at.push(i);
            }
            (b, format!("bit flips at {at:?}"))
        }
        1 => {
            let i = pos(rng, b.len());
            let r = rng.next() as u8;
            let v = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'}', b'[', b'9', b'-', b',', r]);
            b[i] = v;
            (b, format!("byte {i} = {v:#x}"))
        }
        2 => {
            let cut = rng.below(b.len());
            b.truncate(cut);
            (b, format!("truncated to {cut}"))
        }
        3 if b.len() >= 8 => {
            let n = u64::from_le_bytes(b[..8].try_into().unwrap());
            let r = rng.next() % (2 * n.min(1 << 40) + 16);
            let v = *rng.pick(&[
                0,
                1,
                n.wrapping_sub(1),
                n.wrapping_add(1),
                n.wrapping_add(8),
                bytes.len() as u64,
                bytes.len() as u64 - 8,
                100_000_001,
                u64::MAX,
                1 << 63,
                r,
            ]);
            b[..8].copy_from_slice(&v.to_le_bytes());
            (b, format!("header length {n} -> {v}"))
        }
        4 => {
            let i = pos(rng, b.len());
            let k = 1 + rng.below(16);
            if rng.chance(1.0 / 2.0) {
                let end = (i + k).min(b.len());
                b.drain(i..end);
                (b, format!("deleted {i}..{end}"))
            } else {
                let junk: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
                b.splice(i..i, junk);
                (b, format!("inserted {k} bytes at {i}"))
            }
        }
        _ => {
            let (i, j) = (pos(rng, b.len()), rng.below(b.len()));
            let k = (1 + rng.below(64)).min(b.len() - i.max(j));
            let chunk = b[j..j + k].to_vec();
            b[i..i + k].copy_from_slice(&chunk);
            (b, format!("copied {k} bytes {j} -> {i}"))
        }
    }
}

/// One mutant: 1 to 3 edits of mixed kinds; structured edits fall back to byte edits when the file no
/// longer parses.
fn mutant(rng: &mut Rng, base: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut bytes = base.to_vec();
    let mut log = Vec::new();
    let n = 1 + rng.below(3) * rng.below(2);
    for _ in 0..n {
        let r = match rng.below(10) {
            0..=4 => mutate_model_json(rng, &bytes),
            5 | 6 => mutate_tensors(rng, &bytes),
            7 => mutate_header(rng, &bytes),
            _ => None,
        };
        let (b, what) = r.unwrap_or_else(|| mutate_bytes(rng, &bytes));
        bytes = b;
        log.push(what);
    }
    (bytes, log)
}

// ---------------------------------------------------------------------------------------------------------
// Running a mutant.

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Container(_) => "Container",
        Error::Metadata(_) => "Metadata",
        Error::Version { .. } => "Version",
        Error::Tensor { .. } => "Tensor",
        Error::Node { .. } => "Node",
        Error::Graph(_) => "Graph",
        Error::TooLarge(_) => "TooLarge",
        Error::Input(_) => "Input",
        Error::NoKernel { .. } => "NoKernel",
        Error::Arch(_) => "Arch",
        Error::Image(_) => "Image",
        Error::Io(_) => "Io",
        Error::BackendUnavailable { .. } => "BackendUnavailable",
        Error::Backend { .. } => "Backend",
    }
}

/// Work above this (multiply-accumulates plus pooling taps) is not run, only planned.
const MAX_WORK: u64 = 50_000_000;

enum Outcome {
    Rejected(&'static str),
    Costly,
    Ran,
}

/// Loads, plans and (when cheap enough) runs `bytes`, on a fixed pattern input or on `fill` everywhere.
fn exercise(bytes: &[u8], fill: Option<f32>) -> Outcome {
    let model = match format::load(bytes) {
        Ok(m) => m,
        Err(e) => return Outcome::Rejected(kind(&e)),
    };
    // The graph exactly as stored (no folding or fusion) reaches other step kinds; only its panics count.
    let _ = plan_and_run(&model, false, fill);
    plan_and_run(&model, true, fill)
}

fn plan_and_run(model: &Model<'_>, optimize: bool, fill: Option<f32>) -> Outcome {
    let opts = PlanOptions { max_arena_bytes: 64 << 20, optimize, ..Default::default() };
    let plan = match Plan::new(model, &opts) {
        Ok(p) => p,
        Err(e) => return Outcome::Rejected(kind(&e)),
    };
    if plan.macs().saturating_add(plan.pool_taps()) > MAX_WORK {
        return Outcome::Costly;
    }
    let input: Vec<f32> =
        (0..plan.input_value().numel()).map(|i| fill.unwrap_or((i % 17) as f32 * 0.25 - 2.0)).collect();
    let mut exec = plan.executor();
    match exec.run(&input) {
        Ok(out) => {
            assert_eq!(out.len(), plan.output_value().numel(), "output length");
            Outcome::Ran
        }
        Err(e) => Outcome::Rejected(kind(&e)),
    }
}

#[derive(Default)]
struct Tally {
    mutants: usize,
    kinds: BTreeMap<&'static str, usize>,
    ran: usize,
    costly: usize,
    failures: Vec<String>,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// Tries one file; a panic or an absurd allocation is recorded with `describe()`.
fn check(t: &mut Tally, bytes: &[u8], describe: impl Fn() -> String) {
    check_with(t, bytes, None, describe)
}

fn check_with(t: &mut Tally, bytes: &[u8], fill: Option<f32>, describe: impl Fn() -> String) {
    t.mutants += 1;
    BIGGEST.with(|b| b.set(0));
    match catch_unwind(AssertUnwindSafe(|| exercise(bytes, fill))) {
        Ok(Outcome::Rejected(k)) => *t.kinds.entry(k).or_default() += 1,
        Ok(Outcome::Costly) => t.costly += 1,
        Ok(Outcome::Ran) => t.ran += 1,
        Err(p) => t.failures.push(format!("{}: PANIC {}", describe(), panic_message(&*p))),
    }
    let big = BIGGEST.with(|b| b.replace(0));
    if big > 0 {
        t.failures.push(format!("{}: absurd allocation of {big} bytes", describe()));
    }
}

/// `HOSTILE_SEED` (mixed into every seed) and `HOSTILE_SCALE` (multiplies the mutant counts) allow longer
/// local runs; CI uses the fixed defaults.
fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fuzz(label: &str, base: &[u8], seed: u64, count: usize) -> Tally {
    let seed = seed ^ env_u64("HOSTILE_SEED", 0);
    let count = count * env_u64("HOSTILE_SCALE", 1) as usize;
    let mut t = Tally::default();
    // The unmutated model must load, plan and run.
    check(&mut t, base, || format!("{label}: unmutated"));
    assert_eq!(t.ran, 1, "{label}: the base model must run: {:?}", t.failures);
    let mut rng = Rng::new(seed);
    for i in 0..count {
        let (bytes, log) = mutant(&mut rng, base);
        check(&mut t, &bytes, || format!("{label} seed {seed} mutant {i}: {}", log.join(" | ")));
    }
    eprintln!(
        "{label}: {} mutants, {} ran, {} planned but too costly to run, rejected: {:?}",
        t.mutants, t.ran, t.costly, t.kinds
    );
    t
}

fn assert_clean(t: &Tally) {
    if !t.failures.is_empty() {
        let shown: Vec<&String> = t.failures.iter().take(20).collect();
        panic!(
            "{} of {} mutants failed:\n{}",
            t.failures.len(),
            t.mutants,
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

/// Validation must not silently disappear: each kind of error is seen at least `min` times.
fn assert_kinds(t: &Tally, kinds: &[&str], min: usize) {
    for k in kinds {
        let n = t.kinds.get(k).copied().unwrap_or(0);
        assert!(n >= min, "only {n} mutants rejected with Error::{k} (expected at least {min}): {:?}", t.kinds);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Base models.

fn node(name: &str, op: Op, inputs: &[&str]) -> Node {
    Node { name: name.into(), op, inputs: inputs.iter().map(|s| s.to_string()).collect(), output_q: None }
}

fn seeded(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale).collect()
}

fn conv(oc: usize, k: usize, stride: usize, pad: usize, groups: usize, bias: bool) -> Op {
    Op::Conv {
        out_channels: oc,
        window: Window::square(k, stride, pad),
        groups,
        bias,
        residual: false,
        activation: Activation::None,
    }
}

/// A tiny graph touching every op: conv (+ folded batchnorm, fused relu, fused residual), f16 weights, an
/// unfolded batchnorm (affine), an explicit add, max / avg pooling, option-A shortcut, a grouped conv, global
/// average pooling, flatten, linear and softmax. `affine` keeps the unfoldable batchnorm (f32 only).
fn tiny(affine: bool) -> Model<'static> {
    let mut t = BTreeMap::new();
    let mut w = |name: &str, shape: Vec<usize>, scale: f32, seed: u64| {
        let n = shape.iter().product();
        // Batchnorm gamma and var near 1, everything else around 0.
        let offset = if name.ends_with(".gamma") || name.ends_with(".var") { 1.0 } else { 0.0 };
        let v: Vec<f32> = seeded(n, seed, scale).iter().map(|x| x + offset).collect();
        t.insert(name.to_string(), Tensor::from_f32(shape, &v));
    };
    w("c1.weight", vec![4, 3, 3, 3], 0.4, 1);
    w("c1.bias", vec![4], 0.1, 2);
    w("c3.weight", vec![8, 4, 1, 1], 0.5, 4);
    w("fc.weight", vec![5, 8], 0.5, 5);
    w("fc.bias", vec![5], 0.1, 6);
    for (bn, seed) in [("bn1", 10), ("bn2", 20), ("bn3", 30)] {
        w(&format!("{bn}.gamma"), vec![4], 0.2, seed);
        w(&format!("{bn}.beta"), vec![4], 0.1, seed + 1);
        w(&format!("{bn}.mean"), vec![4], 0.1, seed + 2);
        w(&format!("{bn}.var"), vec![4], 0.2, seed + 3);
    }
    t.insert("c2.weight".into(), Tensor::from_f16(vec![4, 4, 3, 3], &seeded(144, 3, 0.3)));
    let mut nodes = vec![
        node("c1", conv(4, 3, 1, 1, 1, true), &["input"]),
        node("bn1", Op::BatchNorm { eps: 1e-5 }, &["c1"]),
        node("r1", Op::Act { activation: Activation::Relu }, &["bn1"]),
        node("mp", Op::MaxPool { window: Window::square(2, 2, 0) }, &["r1"]),
        node("c2", conv(4, 3, 1, 1, 1, false), &["mp"]),
        node("bn2", Op::BatchNorm { eps: 1e-5 }, &["c2"]),
        node("add1", Op::Add { activation: Activation::None }, &["bn2", "mp"]),
        node("r2", Op::Act { activation: Activation::Relu6 }, &["add1"]),
    ];
    let pre_add = if affine {
        nodes.push(node("bn3", Op::BatchNorm { eps: 1e-3 }, &["r2"]));
        "bn3"
    } else {
        "r2"
    };
    nodes.extend([
        node("a2", Op::Add { activation: Activation::Clip { min: -1.0, max: 3.0 } }, &[pre_add, "mp"]),
        // int8 pooling only divides by the whole window; the f32 model keeps the other divisor.
        node("ap", Op::AvgPool { window: Window::square(3, 1, 1), count_include_pad: !affine }, &["a2"]),
        node("sc", Op::ShortcutA { stride: 2, pad_before: 2, pad_after: 2 }, &["ap"]),
        node("c3", conv(8, 1, 1, 0, 2, false), &["sc"]),
        node("gap", Op::GlobalAvgPool, &["c3"]),
        node("fl", Op::Flatten, &["gap"]),
        node("fc", Op::Linear { out_features: 5, bias: true, activation: Activation::None }, &["fl"]),
        node("sm", Op::Softmax, &["fc"]),
    ]);
    if !affine {
        t.retain(|k, _| !k.starts_with("bn3."));
    }
    Model {
        name: "tiny".into(),
        graph: Graph { input: Input { name: "input".into(), shape: vec![3, 8, 8] }, nodes, output: "sm".into() },
        tensors: t,
        preprocess: None,
        labels: vec!["a".into(), "b".into()],
    }
}

fn tiny_int8() -> Model<'static> {
    let m = passes::optimize(&tiny(false)).unwrap();
    let inputs: Vec<Vec<f32>> = (0..3).map(|i| zoo::random_input(3 * 8 * 8, 40 + i)).collect();
    let ranges = zoo::calibrate_minmax(&m, &inputs).unwrap();
    lower_to_int8(&m, &qparams_from_ranges(&ranges, ActivationScheme::AsymmetricI8), &Default::default()).unwrap()
}

fn resnet20(int8: bool) -> Vec<u8> {
    let arch = zoo::arch("resnet20").unwrap();
    let m = if int8 {
        zoo::build_int8(&arch, 1, ActivationScheme::AsymmetricI8).unwrap()
    } else {
        zoo::build(&arch, 1).unwrap()
    };
    format::save(&m).unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// Tests.

const ALL_KINDS: &[&str] = &["Container", "Metadata", "Version", "Tensor", "Node", "Graph", "TooLarge"];

#[test]
fn tiny_f32_mutants_never_panic() {
    let base = format::save(&tiny(true)).unwrap();
    let t = fuzz("tiny f32", &base, 0x5EED_0001, 10_000);
    assert_clean(&t);
    assert_kinds(&t, ALL_KINDS, 5);
    assert!(t.ran >= 100, "too few mutants ran ({}): the mutations are too destructive", t.ran);
}

#[test]
fn tiny_int8_mutants_never_panic() {
    let m = tiny_int8();
    assert!(m.graph.nodes.iter().filter(|n| n.output_q.is_some()).count() >= 8, "{:#?}", m.graph.nodes);
    let base = format::save(&m).unwrap();
    let t = fuzz("tiny int8", &base, 0x5EED_0002, 10_000);
    assert_clean(&t);
    assert_kinds(&t, ALL_KINDS, 5);
    assert!(t.ran >= 100, "too few mutants ran ({})", t.ran);
}

#[test]
fn resnet20_mutants_never_panic() {
    let mut all = Tally::default();
    for (label, int8, seed) in [("resnet20 f32", false, 0x5EED_0003), ("resnet20 int8", true, 0x5EED_0004)] {
        let t = fuzz(label, &resnet20(int8), seed, 150);
        all.mutants += t.mutants;
        all.failures.extend(t.failures);
        for (k, n) in t.kinds {
            *all.kinds.entry(k).or_default() += n;
        }
    }
    assert_clean(&all);
    assert_kinds(&all, &["Container", "Metadata", "Tensor", "Node"], 3);
}

// ---------------------------------------------------------------------------------------------------------
// Hand-made hostile graphs, one per weakness the fuzzer found or that needs sizes it cannot reach.

fn model(input: &[usize], nodes: Vec<Node>, output: &str, tensors: Vec<(&str, Tensor<'static>)>) -> Model<'static> {
    Model {
        name: "hostile".into(),
        graph: Graph { input: Input { name: "input".into(), shape: input.to_vec() }, nodes, output: output.into() },
        tensors: tensors.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        preprocess: None,
        labels: Vec::new(),
    }
}

fn q(scale: f32, zero_point: i32) -> Option<resedge::graph::QParams> {
    Some(resedge::graph::QParams { dtype: resedge::graph::QType::I8, scale, zero_point })
}

#[test]
fn targeted_hostile_graphs_are_rejected() {
    let relu = |name: &str, x: &str| node(name, Op::Act { activation: Activation::Relu }, &[x]);
    let mut clip = tiny_int8();
    for n in &mut clip.graph.nodes {
        if let Op::Add { activation } = &mut n.op {
            *activation = Activation::Clip { min: 5.0, max: -5.0 };
        }
    }
    let (side, taps) = (2920usize, 2920 * 2920);
    let mut avg =
        node("ap", Op::AvgPool { window: Window::square(side, 1, 0), count_include_pad: true }, &["input.quantized"]);
    avg.output_q = q(1.0, 0);
    let mut quant = node("input.quantized", Op::Quantize, &["input"]);
    quant.output_q = q(1e-3, -128);
    let cases: Vec<(&str, Model<'static>, Option<f32>, &str)> = vec![
        ("int8 clip with min > max", clip, None, "Node"),
        (
            // Folding used to allocate the bias from out_channels before checking it against the batchnorm.
            "conv with 2^31 output channels folded into a batchnorm",
            model(
                &[1, 2, 2],
                vec![
                    node("c", conv(1 << 31, 1, 1, 0, 1, false), &["input"]),
                    node("bn", Op::BatchNorm { eps: 1e-5 }, &["c"]),
                ],
                "bn",
                vec![
                    ("c.weight", Tensor::from_f32(vec![1, 1, 1, 1], &[1.0])),
                    ("bn.gamma", Tensor::from_f32(vec![1], &[1.0])),
                    ("bn.beta", Tensor::from_f32(vec![1], &[0.0])),
                    ("bn.mean", Tensor::from_f32(vec![1], &[0.0])),
                    ("bn.var", Tensor::from_f32(vec![1], &[1.0])),
                ],
            ),
            None,
            "Node",
        ),
        (
            // 16384 x (2^25 + 1)^2 outputs: more than 2^64 multiply-accumulates.
            "conv whose output element count overflows",
            model(
                &[1, 1, 1],
                vec![node(
                    "c",
                    Op::Conv {
                        out_channels: 1 << 14,
                        window: Window { kernel: [1, 1], stride: [1, 1], padding: [1 << 24; 4], dilation: [1, 1] },
                        groups: 1,
                        bias: false,
                        residual: false,
                        activation: Activation::None,
                    },
                    &["input"],
                )],
                "c",
                vec![("c.weight", Tensor::from_f32(vec![1 << 14, 1, 1, 1], &vec![0.5; 1 << 14]))],
            ),
            None,
            "TooLarge",
        ),
        (
            // Two live values of 2^63 bytes each: their offsets no longer fit a usize.
            "activations totalling more than the address space",
            model(&[1 << 13, 1 << 24, 1 << 24], vec![relu("r", "input")], "r", vec![]),
            None,
            "TooLarge",
        ),
        (
            "softmax over an empty axis",
            model(&[0], vec![node("s", Op::Softmax, &["input"])], "s", vec![]),
            None,
            "Node",
        ),
        (
            "unfolded batchnorm over an empty image",
            model(
                &[2, 0, 4],
                vec![node("bn", Op::BatchNorm { eps: 1e-5 }, &["input"])],
                "bn",
                vec![
                    ("bn.gamma", Tensor::from_f32(vec![2], &[1.0, 1.0])),
                    ("bn.beta", Tensor::from_f32(vec![2], &[0.0, 0.0])),
                    ("bn.mean", Tensor::from_f32(vec![2], &[0.0, 0.0])),
                    ("bn.var", Tensor::from_f32(vec![2], &[1.0, 1.0])),
                ],
            ),
            None,
            "Node",
        ),
        (
            // 2920^2 taps of 255 overflow the i32 window sum.
            "int8 average pool whose window sum overflows i32",
            model(
                &[1, side, side],
                vec![quant, avg, {
                    let mut d = node("dq", Op::Dequantize, &["ap"]);
                    d.output_q = None;
                    d
                }],
                "dq",
                vec![
                    ("ap.multiplier", Tensor::from_i32(vec![1], &[1 << 30])),
                    ("ap.shift", Tensor::from_i32(vec![1], &[31 + 23])),
                ],
            ),
            Some(1e6),
            "Node",
        ),
    ];
    assert!(taps as u64 * 255 > i32::MAX as u64);
    let mut failures = Vec::new();
    for (what, m, fill, expected) in cases {
        let bytes = format::save(&m).unwrap();
        let mut t = Tally::default();
        check_with(&mut t, &bytes, fill, || what.to_string());
        let got = t.kinds.keys().next().copied().unwrap_or(if t.ran > 0 { "ran" } else { "too costly" });
        if !t.failures.is_empty() {
            failures.extend(t.failures);
        } else if got != expected {
            failures.push(format!("{what}: expected Error::{expected}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The tiny models, written as the cargo-fuzz seed corpus (see fuzz/README.md), must load, plan and run.
/// Files go to `RESEDGE_FUZZ_CORPUS` (e.g. fuzz/corpus/load_model) or a temporary folder.
#[test]
fn fuzz_seed_corpus_is_valid() {
    let dir = std::env::var("RESEDGE_FUZZ_CORPUS")
        .unwrap_or_else(|_| std::env::temp_dir().join("resedge-fuzz-seeds").to_string_lossy().into_owned());
    std::fs::create_dir_all(&dir).unwrap();
    let f32_model = passes::optimize(&tiny(false)).unwrap();
    let inputs: Vec<Vec<f32>> = (0..3).map(|i| zoo::random_input(3 * 8 * 8, 40 + i)).collect();
    let ranges = zoo::calibrate_minmax(&f32_model, &inputs).unwrap();
    let mut seeds = vec![("tiny-f32", tiny(true)), ("tiny-f32-folded", f32_model.clone())];
    for (name, scheme) in [
        ("tiny-i8", ActivationScheme::AsymmetricI8),
        ("tiny-u8", ActivationScheme::AsymmetricU8),
        ("tiny-i8-symmetric", ActivationScheme::SymmetricI8),
    ] {
        seeds.push((
            name,
            lower_to_int8(&f32_model, &qparams_from_ranges(&ranges, scheme), &Default::default()).unwrap(),
        ));
    }
    for (name, m) in seeds {
        let bytes = format::save(&m).unwrap();
        let loaded = format::load(&bytes).unwrap();
        let plan = Plan::new(&loaded, &PlanOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let input = zoo::random_input(plan.input_value().numel(), 7);
        plan.executor().run(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        std::fs::write(format!("{dir}/{name}.rsm"), &bytes).unwrap();
        eprintln!("{dir}/{name}.rsm: {} bytes", bytes.len());
    }
}
