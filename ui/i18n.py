"""Every string the console shows, in English and Russian; pages get a `Translator` for the visitor's language."""

from __future__ import annotations

import json
from dataclasses import dataclass

LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"

STRINGS: dict[str, dict[str, str]] = {
    "app.title": {"en": "Plantbus console", "ru": "Консоль Plantbus"},
    "nav.overview": {"en": "Plant overview", "ru": "Обзор завода"},
    "nav.browser": {"en": "UNS browser", "ru": "Обозреватель UNS"},
    "nav.cameras": {"en": "Cameras", "ru": "Камеры"},
    "lang.switch": {"en": "Русский", "ru": "English"},
    "broker.connected": {"en": "broker connected", "ru": "брокер подключён"},
    "broker.disconnected": {"en": "broker not connected", "ru": "нет связи с брокером"},
    "stats.tags": {"en": "{n} tags", "ru": "тегов: {n}"},
    "stats.rate": {"en": "{rate} msg/s", "ru": "{rate} сообщ./с"},
    "browser.search": {"en": "Search tags (words of the path)", "ru": "Поиск тегов (слова пути)"},
    "browser.tree": {"en": "Namespace", "ru": "Пространство имён"},
    "browser.table": {"en": "Tags", "ru": "Теги"},
    "browser.more": {"en": "… {n} more, use search", "ru": "… ещё {n}, воспользуйтесь поиском"},
    "browser.page": {"en": "{first}–{last} of {total}", "ru": "{first}–{last} из {total}"},
    "browser.prev": {"en": "Previous", "ru": "Назад"},
    "browser.next": {"en": "Next", "ru": "Вперёд"},
    "browser.empty": {"en": "No tags yet: waiting for the broker", "ru": "Тегов пока нет: ждём брокер"},
    "browser.select": {"en": "Select a tag to see its details and trend", "ru": "Выберите тег, чтобы увидеть подробности и тренд"},
    "col.path": {"en": "Path", "ru": "Путь"},
    "col.value": {"en": "Value", "ru": "Значение"},
    "col.quality": {"en": "Quality", "ru": "Качество"},
    "col.timestamp": {"en": "Timestamp", "ru": "Время"},
    "col.datatype": {"en": "Type", "ru": "Тип"},
    "col.changes": {"en": "Changes seen", "ru": "Изменений"},
    "quality.GOOD": {"en": "good", "ru": "норма"},
    "quality.STALE": {"en": "stale", "ru": "устарело"},
    "quality.BAD": {"en": "bad", "ru": "ошибка"},
    "detail.title": {"en": "Tag details", "ru": "Свойства тега"},
    "trend.title": {"en": "Trend, last hour", "ru": "Тренд за последний час"},
    "trend.none": {"en": "No historian: trends need the hub's SQL historian (--historian-url)",
                   "ru": "Нет архива: для трендов нужен SQL-архив хаба (--historian-url)"},
    "trend.empty": {"en": "No stored values in the last hour", "ru": "За последний час значений в архиве нет"},
    "trend.error": {"en": "Historian query failed: {error}", "ru": "Ошибка запроса к архиву: {error}"},
    "write.title": {"en": "Write a value", "ru": "Записать значение"},
    "write.value": {"en": "New value", "ru": "Новое значение"},
    "write.button": {"en": "Write…", "ru": "Записать…"},
    "write.confirm": {"en": "Send {value} to {path}?", "ru": "Отправить {value} в {path}?"},
    "write.ok": {"en": "Send", "ru": "Отправить"},
    "write.cancel": {"en": "Cancel", "ru": "Отмена"},
    "write.failed": {"en": "Write failed: {error}", "ru": "Запись не удалась: {error}"},
    "write.done": {"en": "Command sent to {path}", "ru": "Команда отправлена в {path}"},
    "write.off": {"en": "Writes are off (start the console with the hub and --allow-writes)",
                  "ru": "Запись отключена (запустите консоль вместе с хабом и с --allow-writes)"},
    "overview.nodes": {"en": "Sparkplug nodes and devices", "ru": "Узлы и устройства Sparkplug"},
    "overview.nodes_empty": {"en": "No node status seen yet", "ru": "Состояние узлов пока не получено"},
    "overview.online": {"en": "online", "ru": "в сети"},
    "overview.offline": {"en": "offline", "ru": "не в сети"},
    "overview.summary": {"en": "{online} of {total} online", "ru": "в сети {online} из {total}"},
    "overview.hub": {"en": "Hub", "ru": "Хаб"},
    "overview.hub_none": {"en": "No diagnostics from the hub yet (topic {topic})",
                          "ru": "Диагностики хаба пока нет (топик {topic})"},
    "overview.hub_line": {"en": "host {host_id}: {msgs} msg/s, {metrics} metrics/s, {nodes} nodes online, diagnostics {age} s old",
                          "ru": "хост {host_id}: {msgs} сообщ./с, {metrics} метрик/с, узлов в сети {nodes}, диагностика {age} с назад"},
    "overview.connectors": {"en": "Connectors and plugins", "ru": "Коннекторы и плагины"},
    "overview.connectors_empty": {"en": "The hub reports no connectors or plugins", "ru": "Хаб не сообщает о коннекторах и плагинах"},
    "col.node": {"en": "Node / device", "ru": "Узел / устройство"},
    "col.state": {"en": "State", "ru": "Состояние"},
    "col.reason": {"en": "Reason", "ru": "Причина"},
    "col.since": {"en": "Since", "ru": "С"},
    "col.name": {"en": "Name", "ru": "Имя"},
    "col.kind": {"en": "Kind", "ru": "Вид"},
    "col.rate": {"en": "Rate", "ru": "Скорость"},
    "col.last_error": {"en": "Last error", "ru": "Последняя ошибка"},
    "kind.connector": {"en": "connector", "ru": "коннектор"},
    "kind.plugin": {"en": "plugin", "ru": "плагин"},
    "cameras.title": {"en": "Cameras", "ru": "Камеры"},
    "cameras.empty": {"en": "No camera seen yet: waiting for the CV edge nodes",
                      "ru": "Камер пока нет: ждём узлы компьютерного зрения"},
    "cameras.summary": {"en": "{online} of {total} cameras online", "ru": "в сети {online} из {total} камер"},
    "cameras.events": {"en": "Latest events", "ru": "Последние события"},
    "cameras.events_empty": {"en": "No events since the console started", "ru": "С запуска консоли событий не было"},
    "cameras.events_count": {"en": "{n} since the console started", "ru": "с запуска консоли: {n}"},
    "col.cv_node": {"en": "CV node", "ru": "Узел CV"},
    "col.camera": {"en": "Camera", "ru": "Камера"},
    "col.fps": {"en": "Frames/s", "ru": "Кадр/с"},
    "col.latency": {"en": "Latency, ms", "ru": "Задержка, мс"},
    "col.frames": {"en": "Frames", "ru": "Кадров"},
    "col.dropped": {"en": "Dropped", "ru": "Пропущено"},
    "col.reconnects": {"en": "Reconnects", "ru": "Переподключений"},
    "col.events": {"en": "Events", "ru": "События"},
    "col.violations": {"en": "Violations", "ru": "Нарушения"},
    "col.confidence": {"en": "Confidence", "ru": "Уверенность"},
    "col.counters": {"en": "Rule counters", "ru": "Счётчики правил"},
    "col.snapshot": {"en": "Snapshot", "ru": "Снимок"},
    "col.time": {"en": "Time", "ru": "Время"},
    "col.rule": {"en": "Rule", "ru": "Правило"},
    "col.label": {"en": "Object", "ru": "Объект"},
    "col.zone": {"en": "Zone", "ru": "Зона"},
    "col.score": {"en": "Score", "ru": "Оценка"},
    "col.severity": {"en": "Severity", "ru": "Важность"},
    "severity.info": {"en": "info", "ru": "информация"},
    "severity.low": {"en": "low", "ru": "низкая"},
    "severity.medium": {"en": "medium", "ru": "средняя"},
    "severity.high": {"en": "high", "ru": "высокая"},
    "severity.critical": {"en": "critical", "ru": "критическая"},
    # Quasar's own table texts (QTable defaults are English only)
    "table.rows_per_page": {"en": "Records per page:", "ru": "Записей на странице:"},
    "table.no_data": {"en": "No data available", "ru": "Нет данных"},
    "table.no_results": {"en": "No matching records found", "ru": "Совпадений не найдено"},
    "table.of": {"en": "of", "ru": "из"},
}


@dataclass(frozen=True)
class Translator:
    """Looks strings up for one language; an unknown key shows as itself, so a gap is visible, not fatal."""

    lang: str = DEFAULT_LANGUAGE

    def __call__(self, key: str, **values: object) -> str:
        """The string `key` in this language, with `{name}` fields filled from `values`."""
        entry = STRINGS.get(key)
        text = key if entry is None else entry.get(self.lang) or entry[DEFAULT_LANGUAGE]
        return text.format(**values) if values else text

    @property
    def other(self) -> str:
        """The language the switch leads to."""
        return LANGUAGES[(LANGUAGES.index(self.lang) + 1) % len(LANGUAGES)]


def translator(lang: str | None) -> Translator:
    """A translator for `lang`, English when it is unknown."""
    return Translator(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)


def table_props(t: Translator) -> dict[str, str]:
    """Quasar QTable props that replace its built-in English texts (pagination, empty table) with `t`'s."""
    of = json.dumps(f" {t('table.of')} ")  # a JS string literal, quotes and non-ASCII escaped
    return {
        "rows-per-page-label": t("table.rows_per_page"),
        "no-data-label": t("table.no_data"),
        "no-results-label": t("table.no_results"),
        # Function props: NiceGUI evaluates a ":"-prefixed prop as JavaScript in the browser.
        ":pagination-label": f"(first, last, total) => first + '–' + last + {of} + total",
    }
