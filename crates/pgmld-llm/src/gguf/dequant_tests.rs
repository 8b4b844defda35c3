//! Each block type is checked against hand-built blocks: integer codes and scales are
//! chosen first, packed the way ggml's `quantize_row_*_ref` packs them, and the
//! dequantised values must equal `d * scale * code - dmin * min` element by element.

use super::*;

/// Deterministic small pseudo-random numbers (no RNG crate needed in unit tests).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

fn run(ty: GgmlType, block: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; ty.block_len() * (block.len() / ty.block_bytes())];
    dequantize(ty, block, &mut out).unwrap();
    out
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "element {i}: got {g}, want {w}");
    }
}

#[test]
fn plain_float_types() {
    let values = [1.5f32, -2.25, 0.0, 65504.0];
    let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_close(&run(GgmlType::F32, &f32_bytes), &values);
    let f16b: Vec<u8> = values.iter().flat_map(|v| f16_bytes(*v)).collect();
    assert_close(&run(GgmlType::F16, &f16b), &values);
    let bf16b: Vec<u8> = [1.5f32, -2.25, 0.0, 3.0e38]
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes())
        .collect();
    let got = run(GgmlType::BF16, &bf16b);
    assert_eq!(&got[..3], &[1.5, -2.25, 0.0]);
    assert!((got[3] / 3.0e38 - 1.0).abs() < 1e-2);
}

#[test]
fn q4_0_nibble_order_and_offset() {
    let mut block = f16_bytes(0.5).to_vec();
    block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let got = run(GgmlType::Q4_0, &block);
    // Element j (< 16) is the low nibble of byte j, element j + 16 its high nibble.
    assert_eq!(got[0], -4.0); // (0 - 8) * 0.5
    assert_eq!(got[15], 3.5); // (15 - 8) * 0.5
    assert_eq!(got[16], 3.5); // high nibble of byte 0 = 15
    assert_eq!(got[31], -4.0);
    let want: Vec<f32> = (0..32)
        .map(|i| if i < 16 { (i as f32 - 8.0) * 0.5 } else { ((31 - i) as f32 - 8.0) * 0.5 })
        .collect();
    assert_close(&got, &want);
}

#[test]
fn q4_1_adds_the_minimum() {
    let mut block = f16_bytes(0.25).to_vec();
    block.extend(f16_bytes(-1.0));
    block.extend((0..16u8).map(|j| j | (j << 4)));
    let want: Vec<f32> = (0..32).map(|i| (i % 16) as f32 * 0.25 - 1.0).collect();
    assert_close(&run(GgmlType::Q4_1, &block), &want);
}

/// Packs 32 five-bit codes like `quantize_row_q5_0_ref`: low nibbles in `qs`, the fifth
/// bit of element j at bit j of `qh` (j + 16 for the second half).
fn pack_q5(codes: &[u8]) -> (u32, Vec<u8>) {
    let mut qh = 0u32;
    let mut qs = vec![0u8; 16];
    for j in 0..16 {
        let (x0, x1) = (codes[j], codes[j + 16]);
        qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + 16);
    }
    (qh, qs)
}

#[test]
fn q5_0_and_q5_1_use_the_high_bit_word() {
    let mut rng = Lcg(7);
    let codes: Vec<u8> = (0..32).map(|_| rng.below(32) as u8).collect();
    let (qh, qs) = pack_q5(&codes);
    let mut b0 = f16_bytes(0.125).to_vec();
    b0.extend(qh.to_le_bytes());
    b0.extend(&qs);
    let want0: Vec<f32> = codes.iter().map(|&c| (c as f32 - 16.0) * 0.125).collect();
    assert_close(&run(GgmlType::Q5_0, &b0), &want0);

    let mut b1 = f16_bytes(0.5).to_vec();
    b1.extend(f16_bytes(2.0));
    b1.extend(qh.to_le_bytes());
    b1.extend(&qs);
    let want1: Vec<f32> = codes.iter().map(|&c| c as f32 * 0.5 + 2.0).collect();
    assert_close(&run(GgmlType::Q5_1, &b1), &want1);
}

#[test]
fn q8_0_is_signed() {
    let mut block = f16_bytes(0.5).to_vec();
    let codes: Vec<i8> = (0..32).map(|i| (i * 8 - 128) as i8).collect();
    block.extend(codes.iter().map(|&c| c as u8));
    let want: Vec<f32> = codes.iter().map(|&c| c as f32 * 0.5).collect();
    assert_close(&run(GgmlType::Q8_0, &block), &want);
}

#[test]
fn q2_k_super_block() {
    let mut rng = Lcg(11);
    let codes: Vec<u8> = (0..256).map(|_| rng.below(4) as u8).collect();
    let sc: Vec<u8> = (0..16).map(|_| rng.below(16) as u8).collect();
    let mn: Vec<u8> = (0..16).map(|_| rng.below(16) as u8).collect();
    let (d, dmin) = (0.5f32, 0.25f32);
    let mut block: Vec<u8> = (0..16).map(|j| sc[j] | (mn[j] << 4)).collect();
    let mut qs = vec![0u8; 64];
    for j in [0usize, 128] {
        for l in 0..32 {
            qs[j / 4 + l] = codes[j + l]
                | (codes[j + l + 32] << 2)
                | (codes[j + l + 64] << 4)
                | (codes[j + l + 96] << 6);
        }
    }
    block.extend(qs);
    block.extend(f16_bytes(d));
    block.extend(f16_bytes(dmin));
    let want: Vec<f32> = (0..256)
        .map(|i| d * sc[i / 16] as f32 * codes[i] as f32 - dmin * mn[i / 16] as f32)
        .collect();
    assert_close(&run(GgmlType::Q2K, &block), &want);
}

/// Packs 8 six-bit scales and minimums into 12 bytes like `quantize_row_q4_K_ref`.
fn pack_k4_scales(sc: &[u8], mn: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = sc[j];
            s[j + 4] = mn[j];
        } else {
            s[j + 4] = (sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4);
            s[j - 4] |= (sc[j] >> 4) << 6;
            s[j] |= (mn[j] >> 4) << 6;
        }
    }
    s
}

#[test]
fn q4_k_super_block() {
    let mut rng = Lcg(3);
    let codes: Vec<u8> = (0..256).map(|_| rng.below(16) as u8).collect();
    let sc: Vec<u8> = (0..8).map(|_| rng.below(64) as u8).collect();
    let mn: Vec<u8> = (0..8).map(|_| rng.below(64) as u8).collect();
    let (d, dmin) = (0.0625f32, 0.03125f32);
    let mut block = f16_bytes(d).to_vec();
    block.extend(f16_bytes(dmin));
    block.extend(pack_k4_scales(&sc, &mn));
    for j in (0..256).step_by(64) {
        block.extend((0..32).map(|l| codes[j + l] | (codes[j + l + 32] << 4)));
    }
    let want: Vec<f32> = (0..256)
        .map(|i| d * sc[i / 32] as f32 * codes[i] as f32 - dmin * mn[i / 32] as f32)
        .collect();
    assert_close(&run(GgmlType::Q4K, &block), &want);
}

#[test]
fn q5_k_super_block() {
    let mut rng = Lcg(5);
    let codes: Vec<u8> = (0..256).map(|_| rng.below(32) as u8).collect();
    let sc: Vec<u8> = (0..8).map(|_| rng.below(64) as u8).collect();
    let mn: Vec<u8> = (0..8).map(|_| rng.below(64) as u8).collect();
    let (d, dmin) = (0.125f32, 0.0625f32);
    let mut block = f16_bytes(d).to_vec();
    block.extend(f16_bytes(dmin));
    block.extend(pack_k4_scales(&sc, &mn));
    let mut qh = vec![0u8; 32];
    let mut ql = Vec::new();
    let (mut m1, mut m2) = (1u8, 2u8);
    for n in (0..256).step_by(64) {
        for j in 0..32 {
            let (mut l1, mut l2) = (codes[n + j], codes[n + j + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql.push(l1 | (l2 << 4));
        }
        m1 <<= 2;
        m2 <<= 2;
    }
    block.extend(qh);
    block.extend(ql);
    let want: Vec<f32> = (0..256)
        .map(|i| d * sc[i / 32] as f32 * codes[i] as f32 - dmin * mn[i / 32] as f32)
        .collect();
    assert_close(&run(GgmlType::Q5K, &block), &want);
}

#[test]
fn q6_k_super_block() {
    let mut rng = Lcg(9);
    let codes: Vec<u8> = (0..256).map(|_| rng.below(64) as u8).collect();
    let scales: Vec<i8> = (0..16).map(|_| rng.below(256) as u8 as i8).collect();
    let d = 0.01f32;
    let mut ql = vec![0u8; 128];
    let mut qh = vec![0u8; 64];
    for (half, j) in [0usize, 128].into_iter().enumerate() {
        for l in 0..32 {
            let (q1, q2, q3, q4) =
                (codes[j + l], codes[j + l + 32], codes[j + l + 64], codes[j + l + 96]);
            ql[half * 64 + l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            ql[half * 64 + l + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            qh[half * 32 + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    let mut block = ql;
    block.extend(qh);
    block.extend(scales.iter().map(|&s| s as u8));
    block.extend(f16_bytes(d));
    let d = f16::from_f32(d).to_f32();
    let want: Vec<f32> =
        (0..256).map(|i| d * scales[i / 16] as f32 * (codes[i] as f32 - 32.0)).collect();
    assert_close(&run(GgmlType::Q6K, &block), &want);
}

#[test]
fn threaded_split_matches_whole_blocks() {
    // 2^20 + 2 blocks of 32 elements: large enough for the threaded path, uneven split.
    let blocks = (1 << 15) + 2;
    let mut rng = Lcg(1);
    let data: Vec<u8> =
        (0..blocks * 18).map(|i| if i % 18 == 1 { 0x38 } else { rng.below(256) as u8 }).collect();
    let mut threaded = vec![0f32; blocks * 32];
    dequantize(GgmlType::Q4_0, &data, &mut threaded).unwrap();
    let mut single = vec![0f32; blocks * 32];
    dequantize_blocks(GgmlType::Q4_0, &data, &mut single);
    assert_eq!(threaded, single);
}

#[test]
fn wrong_lengths_are_errors() {
    let mut out = vec![0f32; 32];
    let err = dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out).unwrap_err();
    assert!(err.to_string().contains("34"), "{err}");
    let mut out = vec![0f32; 31];
    assert!(dequantize(GgmlType::Q8_0, &[0u8; 34], &mut out).is_err());
}
