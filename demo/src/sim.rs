//! Shared pieces for Gridwork's end-to-end tests, the demo and the benchmark: a simulated
//! district (streets, communities, grids with patrol points, categories, departments) and the
//! people who work in it.

use std::path::Path;
use std::sync::Arc;

use gridwork_core::clock::DeviceClock;
use gridwork_core::model::catalog::{Catalog, Category, Department, Grid, PatrolPoint, Role};
use gridwork_core::model::geo::{Location, Polygon};
use gridwork_core::model::ids::{CategoryId, DepartmentId, DeviceId, GridId, UserId};
use gridwork_core::store::NewCase;
use gridwork_core::{Identity, OpenOptions, Store};

/// The store key simulated devices use (a real app takes 32 random bytes from the Keystore).
pub const DEMO_KEY: [u8; 32] = *b"gridwork-demo-key-not-for-phones";

/// Grids are laid out on a lattice of ~500 m squares starting here (central Shanghai).
const ORIGIN: (f64, f64) = (31.20, 121.40);
const GRID_DEG: f64 = 0.005;

/// Case categories with the deadlines a district would configure.
pub const CATEGORIES: &[(&str, &str, &str, u32)] = &[
    ("dispute", "邻里纠纷", "Neighbour dispute", 24),
    ("hazard", "安全隐患", "Safety hazard", 12),
    ("urban", "城市管理", "Urban management", 72),
    ("environment", "环境卫生", "Environment", 48),
    ("order", "治安秩序", "Public order", 24),
    ("vulnerable", "困难群众", "Vulnerable residents", 48),
    ("other", "其他", "Other", 96),
];

pub const DEPARTMENTS: &[(&str, &str)] = &[
    ("police", "派出所"),
    ("urban-mgmt", "城管中队"),
    ("housing", "房管所"),
    ("environment", "环卫所"),
    ("fire", "消防站"),
];

/// Titles a worker might write, in Chinese, so search is exercised as it is used.
pub const TITLES: &[&str] = &[
    "楼道电动车充电",
    "消防通道堵塞",
    "小区水管漏水",
    "广场舞噪音扰民",
    "占道经营",
    "垃圾堆放未清运",
    "独居老人需要探访",
    "邻里因漏水纠纷",
    "违章搭建",
    "井盖缺失",
    "燃气异味",
    "施工噪音夜间扰民",
];

/// A district of `grids` grids: 10 grids per community, 10 communities per street.
pub fn district(grids: usize) -> Catalog {
    let cols = (grids as f64).sqrt().ceil().max(1.0) as usize;
    let grids = (0..grids)
        .map(|i| {
            let (row, col) = ((i / cols) as f64, (i % cols) as f64);
            let (lat, lon) = (ORIGIN.0 + row * GRID_DEG, ORIGIN.1 + col * GRID_DEG);
            let ring = vec![(lat, lon), (lat, lon + GRID_DEG), (lat + GRID_DEG, lon + GRID_DEG), (lat + GRID_DEG, lon)];
            let points = (0..4)
                .map(|p| {
                    let f = 0.2 + 0.2 * p as f64;
                    PatrolPoint {
                        id: format!("g{i}-p{p}").as_str().into(),
                        name: format!("Point {p}"),
                        lat: lat + GRID_DEG * f,
                        lon: lon + GRID_DEG * f,
                    }
                })
                .collect();
            Grid {
                id: GridId(format!("g{i}")),
                name: format!("Grid {i}"),
                community: format!("Community {}", i / 10),
                street: format!("Street {}", i / 100),
                boundary: Polygon { ring },
                points,
            }
        })
        .collect();
    Catalog {
        version: 1,
        grids,
        categories: CATEGORIES
            .iter()
            .map(|(id, zh, en, hours)| Category {
                id: CategoryId::from(*id),
                names: [("zh".to_owned(), zh.to_string()), ("en".to_owned(), en.to_string())].into(),
                default_deadline_hours: *hours,
                retired: false,
            })
            .collect(),
        departments: DEPARTMENTS
            .iter()
            .map(|(id, name)| Department { id: DepartmentId::from(*id), name: name.to_string() })
            .collect(),
    }
}

/// The centre of grid `i` in a district made by [`district`].
pub fn grid_centre(catalog: &Catalog, i: usize) -> (f64, f64) {
    let ring = &catalog.grids[i].boundary.ring;
    ((ring[0].0 + ring[2].0) / 2.0, (ring[0].1 + ring[2].1) / 2.0)
}

pub fn identity(user: &str, role: Role, department: Option<&str>) -> Identity {
    Identity {
        user: UserId::from(user),
        role,
        device: DeviceId::from(format!("{user}-phone").as_str()),
        device_code: user.to_uppercase().replace('-', ""),
        department: department.map(DepartmentId::from),
        signing_key: None,
    }
}

/// The identity a phone's store is opened with after enrolment: the server's device id, user,
/// role and department, so every event it writes is attributable to that enrolment.
pub fn identity_from_enrolment(e: &gridwork_core::model::wire::EnrolResponse) -> Identity {
    Identity {
        user: UserId(e.user.clone()),
        role: e.role,
        device: DeviceId(e.device_id.clone()),
        device_code: e.device_code.clone(),
        department: e.department.as_deref().map(DepartmentId::from),
        // The key `sync::enrol` made for this enrolment (None from a server-side redeem).
        signing_key: e
            .device_key
            .as_ref()
            .and_then(|k| gridwork_core::signing::DeviceKey::from_pkcs8(&k.0).ok())
            .map(Arc::new),
    }
}

/// Opens (or creates) a simulated device's store with the district catalogue.
pub fn open_device(
    dir: &Path,
    identity: Identity,
    catalog: &Catalog,
    clock: Option<Arc<dyn DeviceClock>>,
) -> gridwork_core::Result<Store> {
    let mut options = OpenOptions::new(dir, &DEMO_KEY, identity);
    if let Some(c) = clock {
        options.clock = c;
    }
    let store = Store::open(options)?;
    if store.catalog().version != catalog.version {
        store.import_catalog(catalog)?;
    }
    Ok(store)
}

/// Runs `f(state, i)` for every `i` in `0..n` on `threads` plain threads, each taking the next
/// index as it finishes one; `init` makes each thread's own state (an HTTP client, say). Plain
/// threads, because reqwest's blocking client must not run inside a tokio runtime.
pub fn for_each_index<S>(n: usize, threads: usize, init: impl Fn() -> S + Sync, f: impl Fn(&mut S, usize) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut state = init();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    f(&mut state, i);
                }
            });
        }
    });
}

/// A tiny deterministic generator (xorshift), so runs are repeatable from a printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A plausible case in grid `grid` of the district.
pub fn random_case(rng: &mut Rng, catalog: &Catalog, grid: usize, now_ms: i64) -> NewCase {
    let (lat, lon) = grid_centre(catalog, grid);
    NewCase {
        title: TITLES[rng.below(TITLES.len())].to_owned(),
        description: format!(
            "巡查发现，位置在{}号楼附近。Reported on patrol near block {}.",
            rng.below(40) + 1,
            rng.below(40) + 1
        ),
        category: catalog.categories[rng.below(catalog.categories.len())].id.clone(),
        grid: catalog.grids[grid].id.clone(),
        location: Location::gps(
            lat + (rng.unit() - 0.5) * GRID_DEG * 0.8,
            lon + (rng.unit() - 0.5) * GRID_DEG * 0.8,
            3.0 + rng.unit() * 20.0,
            now_ms,
        ),
        photos: vec![],
    }
}
