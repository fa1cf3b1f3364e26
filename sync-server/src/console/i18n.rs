//! The console's words in Chinese (the default) and English.
//!
//! A table in code rather than message files: the console has a few hundred words, the compiler
//! checks that every key a page uses exists (a missing one shows as the key, and a test lists
//! them), and the binary carries them with nothing to deploy.

/// The language a page is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    pub fn html_lang(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The other language, for the switch link.
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// The word for `key`, or the key itself if the table lacks it.
    pub fn t(self, key: &str) -> &str {
        WORDS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, zh, en)| if self == Lang::Zh { *zh } else { *en })
            .unwrap_or(key)
    }
}

/// (key, Chinese, English).
const WORDS: &[(&str, &str, &str)] = &[
    ("districts", "各区", "Districts"),
    ("city_centre", "市中心", "City centre"),
    ("look_at", "查看", "Look at"),
    ("looking_at", "正在查看", "Looking at"),
    ("sign_in_hint", "多区部署中请以 用户名@区 登录", "In a city of districts, sign in as name@district"),
    ("app", "网格工作台", "Gridwork console"),
    ("sign_in", "登录", "Sign in"),
    ("sign_out", "退出", "Sign out"),
    ("user", "用户名", "User name"),
    ("password", "密码", "Password"),
    ("queue", "案件队列", "Case queue"),
    ("all", "全部", "All"),
    ("status", "状态", "Status"),
    ("area", "街道 / 社区 / 网格", "Street / community / grid"),
    ("category", "类别", "Category"),
    ("department", "部门", "Department"),
    ("overdue", "已超期", "Overdue"),
    ("only_overdue", "只看超期", "Overdue only"),
    ("from", "上报起", "Reported from"),
    ("to", "上报止", "Reported to"),
    ("filter", "筛选", "Filter"),
    ("export_csv", "导出 CSV", "Export CSV"),
    ("code", "编号", "Code"),
    ("title", "标题", "Title"),
    ("grid", "网格", "Grid"),
    ("reporter", "上报人", "Reporter"),
    ("reported", "上报时间", "Reported"),
    ("deadline", "处置期限", "Deadline"),
    ("departments", "处置部门", "Departments"),
    ("flags", "标记", "Flags"),
    ("cases", "件", "cases"),
    ("page", "页", "page"),
    ("previous", "上一页", "Previous"),
    ("next", "下一页", "Next"),
    ("no_cases", "没有符合条件的案件", "No case matches"),
    ("description", "描述", "Description"),
    ("location", "位置", "Location"),
    ("accuracy", "精度", "accuracy"),
    ("mock_location", "模拟定位", "mock location"),
    ("official_number", "正式编号", "Official number"),
    ("received", "服务器收到", "Received by server"),
    ("photos", "照片", "Photos"),
    ("not_on_server", "照片尚未上传到服务器", "not on the server yet"),
    ("photo_taken", "拍摄于", "taken"),
    ("photo_no_time", "照片中没有拍摄时间", "no capture time in this photo"),
    ("photo_meta_partly_read", "照片元数据不规范，已读取可读部分", "photo metadata partly read"),
    ("photo_meta_unreadable", "照片元数据无法读取", "photo metadata unreadable"),
    ("photo_meta_absent", "照片不含元数据", "no metadata in this photo"),
    ("photo_far", "照片位置距上报位置", "taken away from the reported position by"),
    ("timeline", "处置经过", "Timeline"),
    ("when", "时间", "When"),
    ("who", "人员", "Who"),
    ("device", "设备", "Device"),
    ("event", "事件", "Event"),
    ("verdict", "结果", "Verdict"),
    ("applied", "有效", "applied"),
    ("invalid", "无效", "invalid"),
    ("conflicts", "冲突的值", "Conflicting values"),
    ("keep_this", "保留此值", "Keep this one"),
    ("contested", "有争议", "Contested"),
    ("keep_decision", "采用此决定", "Keep this decision"),
    ("actions", "操作", "Actions"),
    ("note", "备注", "Note"),
    ("reason", "原因", "Reason"),
    ("deadline_hours", "期限（小时）", "Deadline (hours)"),
    ("level", "上报层级", "Level"),
    ("satisfaction", "满意度", "Satisfaction"),
    ("back_to_queue", "返回队列", "Back to the queue"),
    ("done", "已保存", "Saved"),
    ("error", "出错了", "Something went wrong"),
    ("map", "地图", "Map"),
    ("not_found", "找不到", "Not found"),
    ("coverage", "巡查覆盖", "Patrol coverage"),
    ("assessment", "人员考核", "Worker assessment"),
    ("admin", "系统管理", "Administration"),
    ("day", "日期", "Day"),
    ("points", "巡查点", "Patrol points"),
    ("point", "巡查点", "Patrol point"),
    ("covered", "已打卡", "Checked in"),
    ("missed", "漏巡", "Missed"),
    ("check_ins", "打卡", "Check-ins"),
    ("outside_grid", "网格外打卡", "Outside the grid"),
    ("worker", "网格员", "Worker"),
    ("reported_n", "上报", "Reported"),
    ("accepted_n", "受理", "Accepted"),
    ("rejected_n", "不予受理", "Rejected"),
    ("on_time", "按期处置", "Handled on time"),
    ("late", "超期处置", "Handled late"),
    ("devices", "设备", "Devices"),
    ("enrol_device", "登记设备", "Enrol a device"),
    ("oldest_unsynced", "最早未同步", "Oldest unsynced work"),
    ("outbox", "待发送", "Outbox"),
    ("photos_pending", "待传照片", "Photos pending"),
    ("signed_chain", "签名链", "Signed chain"),
    ("evidence_bundle", "导出证据包", "Export evidence bundle"),
    ("signature", "签名", "Signature"),
    ("clock_flags", "时钟异常", "Clock flags"),
    ("clock_off", "设备时钟偏差", "device clock off by"),
    (
        "clock_off_hint",
        "按本次开机的真实起点推算，记录时设备时钟与真实时间相差超过10分钟",
        "from the true start of the phone's boot, its wall clock was more than 10 minutes off when this was recorded",
    ),
    ("fl_event_clock_off", "事件时钟偏差", "event clock off"),
    ("verified", "已验证", "verified"),
    ("unsigned", "未签名", "unsigned"),
    (
        "verified_hint",
        "由登记设备签名，服务器接收时已核验签名",
        "signed by its enrolled device; the signature was checked when the server received it",
    ),
    (
        "photo_verified_hint",
        "服务器保存的文件与案件记录中的SHA-256一致",
        "the file the server holds matches the SHA-256 the case records",
    ),
    (
        "evidence_bundle_hint",
        "案件全部记录、签名与照片，可用 gridwork-verify 离线核验",
        "The case's whole history, signatures and photos, checkable offline with gridwork-verify",
    ),
    ("unsigned_app", "旧版未签名", "unsigned (old app)"),
    ("chain_holes", "缺口", "holes"),
    ("chain_forks", "分叉", "forks"),
    ("last_seen", "最近同步", "Last synced"),
    ("retire", "停用（离职）", "Retire"),
    ("revoke", "吊销（丢失）", "Revoke"),
    ("wipe", "远程擦除（丢失）", "Wipe (lost)"),
    ("quarantine", "隔离区", "Quarantine"),
    ("key", "标识", "Key"),
    ("case", "案件", "Case"),
    ("release", "放行", "Release"),
    ("reject_item", "驳回", "Reject"),
    ("people", "人员与范围", "People and scopes"),
    ("role", "角色", "Role"),
    ("scopes", "负责范围", "Scopes"),
    ("console_access", "可登录工作台", "Console access"),
    ("save", "保存", "Save"),
    ("categories", "案件类别", "Categories"),
    ("retired", "已停用", "Retired"),
    ("catalog_version", "基础数据版本", "Reference data version"),
    ("import_grids", "导入网格", "Import grids"),
    ("datum", "坐标系", "Datum"),
    ("import", "导入", "Import"),
    ("one_time_code", "一次性登记码", "One-time enrolment code"),
    ("oldest_unsynced_min", "最早未同步（分钟）", "Oldest unsynced work (minutes)"),
    ("needs_you", "今日待办", "Needs you today"),
    ("needs_triage", "待受理", "to triage"),
    ("needs_dispatch", "待派遣", "to dispatch"),
    ("needs_close", "待核查结案", "to verify and close"),
    ("needs_resolve", "有冲突待裁定", "conflicts to resolve"),
    ("needs_overdue", "已超期", "overdue"),
    ("needs_start", "待开始处置", "to start"),
    ("needs_handler_report", "处置中待反馈", "to report back"),
    ("bulk_triage", "批量处理所选案件", "Selected cases"),
    ("bulk_done", "件已处理", "cases done"),
    ("bulk_refused", "未能处理（状态或权限不允许）：", "not done (the state or your role does not allow it):"),
    ("select_case", "选择", "Select"),
    ("dispatch", "派遣", "Dispatch"),
    ("accept_all", "受理", "Accept"),
    ("reject_all", "驳回", "Reject"),
    ("hours", "时限（小时）", "Deadline (hours)"),
    ("go_to_page", "跳到第几页", "Go to page"),
    ("search", "搜索", "Search"),
    ("escalation_rules", "自动督办规则", "Escalation rules"),
    ("escalation_help", "每行一条：not_started 4h urge（派遣后 4 个工作小时未开始则催办）、overdue 1d street（超期 1 个工作日升级到街道）、overdue 3d district。h 为工作小时，d 为工作日。", "One rule per line: not_started 4h urge (not started 4 working hours after dispatch: urge), overdue 1d street (1 working day overdue: escalate to the street), overdue 3d district. h: working hours, d: working days."),
    ("weekdays", "工作日（1=周一 … 7=周日）", "Working weekdays (1 = Monday … 7 = Sunday)"),
    ("day_starts", "上班", "Day starts"),
    ("day_ends", "下班", "Day ends"),
    ("holidays", "节假日（YYYY-MM-DD，空格分隔）", "Holidays (YYYY-MM-DD, space-separated)"),
    ("extra_workdays", "调休上班日", "Extra working days"),
    ("default_rules", "默认规则（各类别未单独设置时）", "Default rules (categories without their own)"),
    ("rules_default", "留空用默认；none 为不督办", "Blank: the default; none: no rules"),
    ("automatic", "自动", "automatic"),
    ("search_hint", "编号、标题或描述中的词、上报人、地点", "Code, words, reporter or place"),
    ("index_behind", "搜索索引尚未收录的最新变更：", "Recent changes not yet searchable:"),
    ("go", "前往", "Go"),
    (
        "map_outside",
        "个案件的位置在这些网格之外，未在图上显示（见案件列表）",
        "cases lie outside these grids and are not drawn (see the case list)",
    ),
    ("map_truncated", "案件过多，只显示部分：请缩小范围", "Too many cases: only some are shown; narrow the area"),
    // Statuses.
    ("st_reported", "已上报", "Reported"),
    ("st_accepted", "已受理", "Accepted"),
    ("st_rejected", "不予受理", "Rejected"),
    ("st_dispatched", "已派遣", "Dispatched"),
    ("st_in_progress", "处置中", "In progress"),
    ("st_handled", "已处置", "Handled"),
    ("st_followed_up", "已回访", "Followed up"),
    ("st_closed", "已结案", "Closed"),
    ("st_contested", "有争议", "Contested"),
    ("st_empty", "空", "Empty"),
    // Event kinds and the actions that make them.
    ("ev_report", "上报", "Report"),
    ("ev_accept", "受理", "Accept"),
    ("ev_reject", "不予受理", "Reject"),
    ("ev_dispatch", "派遣", "Dispatch"),
    ("ev_start", "开始处置", "Start"),
    ("ev_handler_report", "处置完毕", "Mark handled"),
    ("ev_note", "记录", "Note"),
    ("ev_follow_up", "回访", "Follow-up visit"),
    ("ev_close", "核查结案", "Verify and close"),
    ("ev_return", "退回", "Send back"),
    ("ev_urge", "督办", "Urge"),
    ("ev_escalate", "上报上级", "Escalate"),
    ("ev_assign", "指派", "Assign"),
    ("ev_unassign", "取消指派", "Unassign"),
    ("ev_settle", "裁定", "Settle"),
    ("ev_unknown", "未知事件", "Unknown event"),
    ("rr_duplicate", "重复上报", "Duplicate"),
    ("rr_out_of_scope", "不属于受理范围", "Out of scope"),
    ("lv_community", "社区", "Community"),
    ("lv_street", "街道", "Street"),
    ("lv_district", "区", "District"),
    // Flags.
    ("fl_outside_grid", "不在网格内", "outside the grid"),
    ("fl_device_clock_skew", "设备时间偏差", "device clock skewed"),
    ("fl_retired_category", "类别已停用", "retired category"),
    ("fl_unknown_category", "未知类别", "unknown category"),
    ("fl_mock_location", "模拟定位", "mock location"),
    ("overview", "全区概览", "Overview"),
    ("whole_district", "全区", "Whole district"),
    ("street", "街道", "Street"),
    ("community", "社区", "Community"),
    ("not_escalated", "未升级", "Not escalated"),
    ("closed_n", "已结案", "Closed"),
    ("dispatched_n", "派遣", "Dispatched"),
    ("done_n", "已处置", "Handled"),
    ("on_time_rate", "按期率", "On-time rate"),
    ("median_hours", "中位用时（小时）", "Median hours"),
    ("visits_n", "回访数", "Follow-up visits"),
    ("ov_reported", "上报案件", "Cases reported"),
    ("ov_median", "上报到结案中位用时", "Median time from report to closure"),
    ("ov_overdue_now", "当前超期", "Overdue now"),
    ("ov_on_time", "部门按期处置率", "Departments' on-time rate"),
    ("ov_satisfaction_mean", "平均满意度", "Mean satisfaction"),
    ("ov_per_day", "每日上报（按类别）", "Reported per day, by category"),
    ("ov_parts", "各区域上报", "Reported by area"),
    ("ov_departments", "各部门按期处置率", "On-time rate by department"),
    ("ov_closure", "上报到结案中位用时（按类别）", "Median hours from report to closure, by category"),
    ("ov_overdue", "当前超期（按督办层级）", "Overdue now, by escalation level"),
    ("ov_satisfaction", "回访满意度", "Follow-up satisfaction"),
    ("ov_heat_map", "案件热力图", "Cases over the grid map"),
    ("ov_note", "按上报日期统计；当前超期指该期间上报、现已超过期限仍待处置的案件。数据随后台索引更新，可能滞后几秒。", "Counted by the day a case was reported; overdue now means cases reported in the period that wait past their deadline now. The figures follow the background index and may trail by a few seconds."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_has_both_languages_and_keys_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (k, zh, en) in WORDS {
            assert!(seen.insert(*k), "key {k} twice");
            assert!(!zh.is_empty() && !en.is_empty(), "{k}");
        }
        assert_eq!(Lang::Zh.t("queue"), "案件队列");
        assert_eq!(Lang::En.t("queue"), "Case queue");
        assert_eq!(Lang::En.t("no-such-key"), "no-such-key");
    }
}
