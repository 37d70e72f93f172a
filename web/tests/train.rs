//! A short training run of the toy model in the browser: caption-text
//! pretraining, then the Flamingo stage with per-group clipping. Both
//! losses must fall, some coefficients must be below 1, and WebGPU must
//! accept every call.

#![cfg(all(target_arch = "wasm32", feature = "toy"))]

mod common;

use wasm_bindgen_test::wasm_bindgen_test;
use wgpu_gradclip::toy::{ClipChoice, ToyConfig, Trainer};

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

#[wasm_bindgen_test]
async fn short_training_run_lowers_the_loss() {
    let gpu = common::device(wgpu::Limits::default()).await;
    // The reduced configuration; a max_norm far below its gradient norms so
    // that clipping is certain to act.
    let config = ToyConfig {
        pretrain_steps: 12,
        steps: 24,
        max_norm: 1e-3,
        ..ToyConfig::tiny()
    };

    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut trainer = Trainer::new(&gpu.device, &gpu.queue, config.clone())
        .await
        .expect("trainer");
    trainer
        .set_clip(ClipChoice::PerGroup, config.max_norm)
        .expect("clip settings");

    let mut text = Vec::new();
    for _ in 0..config.pretrain_steps {
        text.push(trainer.pretrain_step().await.expect("pretrain step"));
    }
    trainer.begin_flamingo();
    let mut flamingo = Vec::new();
    let mut clipped = 0;
    for _ in 0..config.steps {
        let stats = trainer.step().await.expect("flamingo step");
        assert!(
            stats.loss.is_finite(),
            "step {}: loss {}",
            stats.step,
            stats.loss
        );
        clipped += stats.groups.iter().filter(|g| g.2 < 1.0).count();
        flamingo.push(stats.loss);
    }
    if let Some(e) = scope.pop().await {
        panic!("WebGPU rejected a training call: {e}");
    }
    log::info!("text losses {text:?}");
    log::info!("flamingo losses {flamingo:?}");

    let (first, last) = (mean(&text[..3]), mean(&text[text.len() - 3..]));
    assert!(
        last < 0.9 * first,
        "pretraining loss did not fall: {first} -> {last}"
    );
    let (first, last) = (mean(&flamingo[..5]), mean(&flamingo[flamingo.len() - 5..]));
    assert!(
        last < first,
        "Flamingo-stage loss did not fall: {first} -> {last}"
    );
    assert!(
        clipped > 0,
        "no group was ever clipped at max_norm {}",
        config.max_norm
    );
}
