//! Small topologies and changes shared by the driver's unit tests (each
//! file's tests sit beside its code).

use crate::model::{self, Change, ChangeItem, Command, Topology};

pub(super) fn join(t: &mut Topology, host: &str, c: &str, cen: &str) {
    t.execute(&Command::ContainerJoinCen { host: host.into(), container: c.into(), cen: cen.into() }).unwrap();
}

/// cen3 (c9 on h1, c10 on h2), cen4 (c11, c12 on h2), cen5 (c1, c2 on h1),
/// a CIN over cen3 and cen4, one over cen5; h1 and h2 announced.
pub(super) fn spread() -> Topology {
    let mut t = Topology::new();
    for (h, a) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        t.execute(&Command::HostAnnounce { id: h.into(), vtep: Some(a.parse().unwrap()) }).unwrap();
    }
    for cen in ["cen3", "cen4", "cen5"] {
        t.execute(&Command::CenCreate { id: cen.into() }).unwrap();
    }
    join(&mut t, "h1", "c9", "cen3");
    join(&mut t, "h2", "c10", "cen3");
    join(&mut t, "h2", "c11", "cen4");
    join(&mut t, "h2", "c12", "cen4");
    join(&mut t, "h1", "c1", "cen5");
    join(&mut t, "h1", "c2", "cen5");
    let cins = vec![
        model::CinSpec { id: "n34".into(), cens: vec!["cen3".into(), "cen4".into()] },
        model::CinSpec { id: "n5".into(), cens: vec!["cen5".into()] },
    ];
    t.execute(&Command::CinImport { cins }).unwrap();
    t.execute(&Command::CinSetMade { ids: vec!["n34".into(), "n5".into()], made: true, realizing: false }).unwrap();
    t
}

/// Runs `cmd` on `t` and returns the change it committed, as the service
/// publishes it (each touched record before and after).
pub(super) fn change_of(t: &mut Topology, cmd: &Command) -> Change {
    let after = t.prepare(cmd).unwrap();
    let before = t.images_of(after.keys());
    t.commit(&after);
    let items =
        after.iter().map(|(k, a)| ChangeItem { key: k.clone(), before: before[k].clone(), after: a.clone() }).collect();
    Change { revision: 100, mutation: cmd.name().into(), at_ms: 0, at_us: 0, actor: String::new(), items }
}
