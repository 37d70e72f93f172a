use wgpu_gradclip::toy::{native, ToyConfig, Trainer};
fn main() {
    let config = ToyConfig {
        train_images: 128,
        eval_images: 16,
        ..ToyConfig::default()
    };
    pollster::block_on(async {
        let (device, queue, _) = native::open_device().await.unwrap();
        let mut tr = Trainer::new(&device, &queue, config).await.unwrap();
        tr.begin_flamingo();
        let prof = tr.profile(5).await.unwrap();
        let total: f64 = prof.iter().map(|p| p.1).sum();
        for (n, t) in &prof {
            println!("{:8.3} ms {n}", t * 1e3);
        }
        println!("total {:.1} ms", total * 1e3);
    });
}
