"""The console's words in Chinese and English; the language is the user's choice, kept in the session."""

from __future__ import annotations

LANGS = ("zh", "en")

_WORDS: dict[str, tuple[str, str]] = {  # key: (中文, English)
    "title": ("社区服务管理站", "Community office"),
    "gateways": ("网关", "Gateways"), "residents": ("住户", "Residents"), "registrations": ("登记审核", "Registrations"),
    "passes": ("访客通行证", "Visitor passes"), "alarms": ("告警", "Alarms"), "events": ("通行记录", "Events"),
    "export": ("居住登记导出", "Registration export"), "audit": ("审计日志", "Audit log"),
    "login": ("登录", "Log in"), "logout": ("退出", "Log out"), "name": ("姓名", "Name"), "user": ("用户名", "User"),
    "password": ("密码", "Password"), "bad_login": ("用户名或密码错误", "Wrong user or password"),
    "state": ("状态", "State"), "list_version": ("名单版本", "List version"), "last_seen": ("最后联系", "Last seen"),
    "last_event": ("最后事件", "Last event"), "faults": ("故障", "Faults"), "none": ("无", "none"),
    "building": ("楼栋", "Building"), "room": ("房号", "Room"), "lease_end": ("租期至", "Lease end"),
    "credentials": ("凭证", "Credentials"), "care": ("关爱", "Care"), "quiet_hours": ("静默小时", "Quiet hours"),
    "consent_by": ("同意人", "Consent by"), "set_care": ("设为关爱对象", "Flag for care"), "end_care": ("取消关爱", "End care"),
    "received": ("收到", "Received"), "door": ("门", "Door"), "doors": ("门（逗号分隔）", "Doors (comma-separated)"),
    "until": ("截止日期", "Until"), "ic_card": ("IC卡号（可选）", "IC card UID (optional)"), "approve": ("批准", "Approve"),
    "reject": ("驳回", "Reject"), "note": ("备注", "Note"),
    "host": ("被访住户", "Host"), "hours": ("有效小时", "Hours valid"), "uses": ("可用次数", "Uses"), "issue": ("签发", "Issue"),
    "revoke": ("撤销", "Revoke"), "revoked": ("已撤销", "revoked"), "valid_to": ("有效至", "Valid to"),
    "issued_by": ("签发人", "Issued by"), "pass_shown_once": ("二维码只显示这一次：请交给访客。转发的照片在有效期内也能开门，请尽量缩短有效期。",
                                                            ("This code is shown once: hand it to the visitor. A forwarded photo of it also opens "
                                                            "the door inside its window, so keep windows short.")),
    "severity": ("级别", "Severity"), "raised": ("发生", "Raised"), "cleared": ("已恢复", "Cleared"), "acknowledge": ("确认", "Acknowledge"),
    "acked_by": ("确认人", "Acknowledged by"), "open_alarms": ("未恢复告警", "Open alarms"), "history": ("历史", "History"),
    "gateway": ("网关", "Gateway"), "subject": ("对象", "Subject"), "reason": ("原因", "Reason"), "time": ("时间", "Time"),
    "filter": ("筛选", "Filter"), "older": ("更早", "Older"), "since": ("起", "From"), "kind": ("类型", "Kind"),
    "download_csv": ("下载CSV（记入审计）", "Download CSV (audited)"), "police_only": ("仅限派出所联络员", "Police liaison only"),
    "who": ("操作人", "Who"), "action": ("操作", "Action"), "detail": ("详情", "Detail"), "forbidden": ("无权限", "Not allowed"),
    "language": ("English", "中文"),
    "locked": ("尝试次数过多，请15分钟后再试", "Too many attempts: try again in 15 minutes"),
    "csrf": ("表单已过期，请返回刷新后重试", "The form has expired: go back, reload and try again"),
    "pending": ("待审核", "pending"), "approved": ("已批准", "approved"), "rejected": ("已驳回", "rejected"),
    "online": ("在线", "online"), "offline": ("离线", "offline"), "stopped": ("已停止", "stopped"),
    "critical": ("紧急", "critical"), "major": ("重要", "major"), "minor": ("一般", "minor"),
}


def words(lang: str) -> dict[str, str]:
    i = 1 if lang == "en" else 0
    return {k: v[i] for k, v in _WORDS.items()}
