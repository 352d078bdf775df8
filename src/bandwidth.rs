//! `bandwidth_limit`: one rate (`20MiB/s`), or a timetable like rclone's —
//! `"08:00,4MiB/s 18:00,off"`, each entry from that local time on, every
//! day or on one weekday (`Sat-00:00,off`) — applied while a run goes on.

use chrono::{Datelike, Local, Timelike};

/// When each rate starts, in minutes since Monday 00:00 local time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule(Vec<(u32, Option<u64>)>);

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const WEEK: u32 = 7 * 1440;

impl Schedule {
    /// A rate or a timetable; `rate` parses one rate (`off` is no limit).
    pub fn parse(text: &str, rate: impl Fn(&str) -> Result<u64, String>) -> Result<Schedule, String> {
        let rate = |r: &str| if r.trim() == "off" { Ok(None) } else { rate(r).map(Some) };
        if !text.contains(',') {
            return Ok(Schedule(vec![(0, rate(text)?)]));
        }
        let mut slots = Vec::new();
        for entry in text.split_whitespace() {
            let (when, r) = entry.split_once(',').ok_or_else(|| format!("\"{entry}\": expected TIME,RATE"))?;
            let r = rate(r)?;
            let (days, time) = match when.split_once('-') {
                Some((day, time)) => {
                    let d = DAYS.iter().position(|d| d.eq_ignore_ascii_case(day));
                    let d = d.ok_or_else(|| format!("\"{entry}\": {day} is not a day (Mon … Sun)"))?;
                    (d..d + 1, time)
                }
                None => (0..7, when),
            };
            let minute = minute_of_day(time).ok_or_else(|| format!("\"{entry}\": {time} is not HH:MM"))?;
            slots.extend(days.map(|d| (d as u32 * 1440 + minute, r)));
        }
        slots.sort_by_key(|(at, _)| *at);
        Ok(Schedule(slots))
    }

    /// The rate at `minute` of the week (Monday 00:00 is 0): the last entry
    /// at or before it, else the week's last (it runs on from last week).
    pub fn rate_at(&self, minute: u32) -> Option<u64> {
        let earlier = self.0.iter().rev().find(|(at, _)| *at <= minute % WEEK);
        earlier.or(self.0.last()).and_then(|(_, rate)| *rate)
    }

    /// The rate now, in local time (a single rate needs no clock: this is
    /// asked for every chunk of every download).
    pub fn rate_now(&self) -> Option<u64> {
        if let [(_, rate)] = self.0[..] {
            return rate;
        }
        let now = Local::now();
        self.rate_at(now.weekday().num_days_from_monday() * 1440 + now.hour() * 60 + now.minute())
    }
}

fn minute_of_day(time: &str) -> Option<u32> {
    let (h, m) = time.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schedule, String> {
        Schedule::parse(text, |r| r.trim_end_matches("/s").parse::<u64>().map_err(|e| e.to_string()))
    }

    #[test]
    fn a_timetable_gives_each_time_of_the_week_its_rate() {
        let day = parse("08:00,400 18:00,off").unwrap();
        let at = |d: u32, h: u32, m: u32| d * 1440 + h * 60 + m;
        assert_eq!(day.rate_at(at(2, 7, 59)), None, "before 08:00 the evening's off still holds");
        assert_eq!(day.rate_at(at(2, 8, 0)), Some(400));
        assert_eq!(day.rate_at(at(2, 17, 59)), Some(400));
        assert_eq!(day.rate_at(at(2, 18, 0)), None);
        let week = parse("Mon-08:00,100 Sat-00:00,off").unwrap();
        assert_eq!(week.rate_at(at(0, 7, 0)), None, "Monday before 08:00: the weekend's off");
        assert_eq!(week.rate_at(at(4, 23, 59)), Some(100));
        assert_eq!(week.rate_at(at(6, 12, 0)), None);
        assert_eq!(parse("200/s").unwrap().rate_at(at(3, 3, 3)), Some(200));
        assert_eq!(parse("off").unwrap().rate_at(0), None);
        for bad in ["25:00,1", "08:00", "Xyz-08:00,1", "08:00,fast"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
