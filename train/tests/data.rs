//! Data loading: CIFAR binary records, image folders in a tar.gz (lossless PNGs, so pixels compare
//! exactly), the safetensors cache, channel statistics, and the device-side augmentation.

mod common;

use resedge_train::augment::{Augment, DeviceSet, PAD};
use resedge_train::data::{self, Dataset, DatasetTensors};
use tch::{Device, Kind};

#[test]
fn cifar_binary_records() {
    let dir = common::temp_dir("cifar-bin");
    let ds = common::synthetic(5, 10, 3);
    let mut bytes = Vec::new();
    for i in 0..5 {
        bytes.push(ds.labels[i] as u8);
        bytes.extend_from_slice(&ds.images[i * 3072..(i + 1) * 3072]);
    }
    let path = dir.join("batch.bin");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), (0..10).map(|c| format!("class{c}\n")).collect::<String>()).unwrap();
    let back = data::read_cifar_bin(std::slice::from_ref(&path), None).unwrap();
    assert_eq!(back, ds);
    std::fs::write(&path, &bytes[..100]).unwrap();
    assert!(data::read_cifar_bin(&[path], None).is_err(), "a truncated record must be an error");
}

/// A tar.gz of `<root>/train/<class>/<nnnn>.png`, written in a scrambled order.
fn write_folder_archive(ds: &Dataset, path: &std::path::Path) {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    order.reverse();
    for i in order {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let p = (y * 32 + x) as usize;
            image::Rgb([0, 1, 2].map(|c| ds.images[i * 3072 + c * 1024 + p]))
        });
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let class = &ds.classes[ds.labels[i] as usize];
        let mut h = tar::Header::new_gnu();
        h.set_size(png.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("train/{class}/{:04}.png", i), png.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn image_folder_archive_and_cache() {
    let dir = common::temp_dir("folder");
    // Labels sorted by class so that folder order (class, then file) is the dataset order.
    let mut ds = common::synthetic(12, 3, 4);
    let mut idx: Vec<usize> = (0..12).collect();
    idx.sort_by_key(|&i| (ds.labels[i], i));
    ds = Dataset {
        images: idx.iter().flat_map(|&i| ds.images[i * 3072..(i + 1) * 3072].to_vec()).collect(),
        labels: idx.iter().map(|&i| ds.labels[i]).collect(),
        ..ds
    };
    let archive = dir.join("train.tar.gz");
    write_folder_archive(&ds, &archive);
    let back = data::read_image_folder(&archive, None, None).unwrap();
    assert_eq!(back, ds);

    let cache = dir.join("cache");
    let first = data::load(archive.to_str().unwrap(), None, None, None, Some(&cache)).unwrap();
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "one cache file written");
    let second = data::load(archive.to_str().unwrap(), None, None, None, Some(&cache)).unwrap();
    assert_eq!(first, second);

    let wrong = vec!["class0".to_string(), "class1".to_string()];
    let err = data::read_image_folder(&archive, Some(wrong), None).unwrap_err();
    assert!(format!("{err:#}").contains("class2"), "{err:#}");
}

#[test]
fn channel_stats() {
    let mut ds = common::synthetic(2, 2, 0);
    for (i, p) in ds.images.iter_mut().enumerate() {
        // Channel 0 all 0; channel 1 all 255; channel 2 alternates 0 / 255.
        let c = (i / 1024) % 3;
        *p = [0, 255, if i % 2 == 0 { 0 } else { 255 }][c];
    }
    let (mean, std) = ds.channel_stats();
    assert_eq!(mean, [0.0, 1.0, 0.5]);
    assert_eq!(std, [0.0, 0.0, 0.5]);
}

#[test]
fn pad_crop_flip_gives_crops_of_the_padded_image() {
    let ds = common::synthetic(6, 2, 8);
    let set = DeviceSet::new(&ds, Augment::PadCropFlip, 32, Device::Cpu, [0.0; 3], [1.0; 3], false).unwrap();
    let (x, y) = set.epoch(1, 0, 6).next().unwrap();
    assert_eq!(x.size(), [6, 3, 32, 32]);
    let raw = ds.images_tensor().to_kind(Kind::Float) / 255.0;
    let padded = raw.constant_pad_nd([PAD, PAD, PAD, PAD]);
    for b in 0..6 {
        let label = y.int64_value(&[b]);
        let matches: Vec<(i64, i64, i64, bool)> = (0..ds.len() as i64)
            .filter(|&i| ds.labels[i as usize] == label)
            .flat_map(|i| {
                (0..=2 * PAD)
                    .flat_map(move |dy| (0..=2 * PAD).flat_map(move |dx| [(i, dy, dx, false), (i, dy, dx, true)]))
            })
            .filter(|&(i, dy, dx, f)| {
                let c = padded.get(i).narrow(1, dy, 32).narrow(2, dx, 32);
                let c = if f { c.flip([2]) } else { c };
                c.equal(&x.get(b))
            })
            .collect();
        assert!(!matches.is_empty(), "batch item {b} is no crop/flip of any image of its class");
    }
    let plain = set.plain_batch(0, 6).0;
    assert!(plain.equal(&raw), "evaluation batches are the images as stored");
}

#[test]
fn epochs_draw_different_orders_reproducibly() {
    let ds = common::synthetic(64, 4, 8);
    let set = DeviceSet::new(&ds, Augment::PadCropFlip, 32, Device::Cpu, [0.0; 3], [1.0; 3], false).unwrap();
    let labels = |seed, epoch| -> Vec<i64> {
        set.epoch(seed, epoch, 64).flat_map(|(_, y)| Vec::<i64>::try_from(&y).unwrap()).collect()
    };
    assert_eq!(labels(1, 0), labels(1, 0));
    assert_ne!(labels(1, 0), labels(1, 1));
    assert_ne!(labels(1, 0), labels(2, 0));
    assert_eq!(set.epoch(1, 0, 30).steps(), 3);
    assert_eq!(set.epoch(1, 0, 30).map(|(x, _)| x.size()[0]).collect::<Vec<_>>(), [30, 30, 4]);
}
