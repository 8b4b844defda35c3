use super::*;
use pgmld_train::optim::no_decay;

#[test]
fn dynamic_maps_match_bitsandbytes() {
    let signed = dynamic_map(true);
    let unsigned = dynamic_map(false);
    assert_eq!((signed.len(), unsigned.len()), (256, 256));
    assert!(signed.windows(2).all(|w| w[0] <= w[1]) && unsigned.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*signed.last().unwrap(), 1.0);
    assert_eq!(unsigned[0], 0.0);
    assert!(signed.contains(&0.0));
    // bitsandbytes' first entries: the smallest decade's means.
    assert!((signed[0] + 0.99297).abs() < 1e-4, "{}", signed[0]);
    // linspace(0.1, 1, 3) midpoints 0.325, 0.775 in the 1e-6 decade.
    assert!((unsigned[1] - 3.25e-7).abs() < 1e-12, "{}", unsigned[1]);
    assert!((signed[signed.iter().position(|&v| v == 0.0).unwrap() + 1] - 5.5e-7).abs() < 1e-12);
}

#[test]
fn block_quantisation_round_trips_within_the_code_spacing() {
    let book = CodeBook::new(true, Device::Cpu);
    tch::manual_seed(0);
    // Values over several decades, 700 of them: 3 blocks, the last one partial.
    let x = Tensor::randn([700], (Kind::Float, Device::Cpu))
        * Tensor::logspace(-4.0, 0.0, 700, 10.0, (Kind::Float, Device::Cpu));
    let q = book.quantize(&x);
    assert_eq!(q.codes.size(), [3, BLOCK_SIZE]);
    assert_eq!(q.codes.kind(), Kind::Uint8);
    let back = book.dequantize(&q, &[700]);
    let rel = ((&back - &x).abs() / x.abs().clamp_min(1e-12)).median().double_value(&[]);
    assert!(rel < 0.05, "median relative error {rel}");
    // Nearest code: the absmax of each block is exact.
    let absmax_err = (back.abs().max() - x.abs().max()).abs().double_value(&[]);
    assert!(absmax_err < 1e-6, "{absmax_err}");
}

/// f(p) = ½ Σ aᵢ (pᵢ − tᵢ)² with curvatures over three decades.
fn quadratic_loss(p: &Tensor) -> Tensor {
    let n = p.size()[0];
    let opts = (Kind::Float, Device::Cpu);
    let a = Tensor::logspace(-1.5, 1.5, n, 10.0, opts);
    let t = (Tensor::arange(n, opts) * 0.37).sin();
    ((p - t).square() * a * 0.5).sum(Kind::Float)
}

#[test]
fn tracks_f32_adamw_on_a_quadratic_with_a_quarter_of_the_state() {
    let n = 8192;
    let make = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root().var("weight", &[n], nn::Init::Const(0.0));
        (vs, p)
    };
    let (vs32, p32) = make();
    let (vs8, p8) = make();
    let mut f32_opt = AdamW::new(&vs32, 0.01, no_decay);
    let mut q8_opt = AdamW8bit::new(&vs8, 0.01, no_decay);
    let initial = quadratic_loss(&p32).double_value(&[]);
    let (mut l32, mut l8) = (0.0, 0.0);
    for step in 0..200 {
        let lr = 0.05 * (1.0 - step as f64 / 200.0);
        for (p, loss) in [(&p32, &mut l32), (&p8, &mut l8)] {
            let l = quadratic_loss(p);
            *loss = l.double_value(&[]);
            l.backward();
        }
        f32_opt.step(lr);
        f32_opt.zero_grad();
        q8_opt.step(lr);
        q8_opt.zero_grad();
    }
    println!("loss: initial {initial:.3}, f32 {l32:.5}, 8-bit {l8:.5}");
    assert!(l32 < initial * 0.01, "f32 AdamW converges: {l32}");
    assert!((l8 - l32).abs() < 0.1 * l32 + 1e-3, "8-bit {l8} vs f32 {l32}");
    let drift = (&p8 - &p32).abs().max().double_value(&[]);
    let moved = p32.abs().max().double_value(&[]);
    println!("max |p8 - p32| = {drift:.4} (max |p| = {moved:.3})");
    assert!(drift < 0.05 * moved, "{drift}");
    let f32_bytes = 2 * 4 * n as u64;
    let q8_bytes = q8_opt.state_bytes();
    println!("state bytes: 8-bit {q8_bytes}, f32 {f32_bytes}");
    assert_eq!(q8_bytes, 2 * (n as u64 + 4 * (n / BLOCK_SIZE) as u64));
    assert!((q8_bytes as f64) < 0.26 * f32_bytes as f64);
}

#[test]
fn small_tensors_keep_f32_moments_and_match_adamw_exactly() {
    let vs32 = nn::VarStore::new(Device::Cpu);
    let p32 = vs32.root().var("bias", &[100], nn::Init::Const(0.5));
    let vs8 = nn::VarStore::new(Device::Cpu);
    let p8 = vs8.root().var("bias", &[100], nn::Init::Const(0.5));
    let mut a = AdamW::new(&vs32, 0.1, |_| false);
    let mut b = AdamW8bit::new(&vs8, 0.1, |_| false);
    for _ in 0..10 {
        quadratic_loss(&p32).backward();
        a.step(0.01);
        a.zero_grad();
        quadratic_loss(&p8).backward();
        b.step(0.01);
        b.zero_grad();
    }
    assert!((&p8 - &p32).abs().max().double_value(&[]) < 1e-6);
    assert_eq!(b.state_bytes(), 2 * 4 * 100);
}

#[test]
fn save_and_load_continue_the_same_trajectory() {
    let make = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("weight", &[5000], nn::Init::Const(0.0));
        let b = vs.root().var("bias", &[10], nn::Init::Const(0.0));
        (vs, w, b)
    };
    let loss = |w: &Tensor, b: &Tensor| quadratic_loss(w) + quadratic_loss(b);
    let (vs_a, wa, ba) = make();
    let (mut vs_b, wb, bb) = make();
    let mut a = AdamW8bit::new(&vs_a, 0.0, no_decay);
    for _ in 0..3 {
        loss(&wa, &ba).backward();
        a.step(0.01);
        a.zero_grad();
    }
    let dir = std::env::temp_dir().join(format!("pgmld-optim8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("optimizer.safetensors");
    a.save(&file).unwrap();
    vs_b.copy(&vs_a).unwrap();
    let mut b = AdamW8bit::new(&vs_b, 0.0, no_decay);
    b.load(&file).unwrap();
    assert_eq!(b.step_count(), 3);
    for _ in 0..3 {
        loss(&wa, &ba).backward();
        a.step(0.01);
        a.zero_grad();
        loss(&wb, &bb).backward();
        b.step(0.01);
        b.zero_grad();
    }
    assert_eq!((&wa - &wb).abs().max().double_value(&[]), 0.0);
    assert_eq!((&ba - &bb).abs().max().double_value(&[]), 0.0);
    // Another model's state is refused.
    let other = nn::VarStore::new(Device::Cpu);
    let _ = other.root().var("weight", &[6000], nn::Init::Const(0.0));
    let err = AdamW8bit::new(&other, 0.0, no_decay).load(&file).unwrap_err().to_string();
    assert!(err.contains("weight") || err.contains("bias"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn optim_choice_picks_the_optimizer() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = vs.root().var("weight", &[3], nn::Init::Const(0.0));
    assert!(matches!(Optimizer::new(Optim::AdamwTorch, &vs, 0.0, no_decay), Optimizer::F32(_)));
    assert!(matches!(
        Optimizer::new(Optim::PagedAdamw8bit, &vs, 0.0, no_decay),
        Optimizer::Bit8(_)
    ));
    assert_eq!(Optimizer::new(Optim::AdamwBnb8bit, &vs, 0.0, no_decay).parameters().len(), 1);
}
