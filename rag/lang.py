"""Language rules of the answer path, as named tables in one place.

Owns the generic Chinese grammar the stages rely on: what kind of value a
question asks for (number in a unit, date, ordinal, reason, name), what a
sentence states, which words make a turn lean on the previous one, and the
year and place patterns the judge reads as features. Nothing here names a
particular article or question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from rag.text import normalize_width

if TYPE_CHECKING:
    from rag.text import Tokenizer

NOT_FOUND = "资料中没有找到这个问题的答案。"

# Turns that ask nothing of the articles: greetings, thanks, goodbyes, "who are you". Only the
# whole turn counts (punctuation, emoji and spaces aside), so "谢谢，综保区有多少企业？" is a question.
# They get a word on what the service does, not the passages closest to "你好".
SMALL_TALK = re.compile(
    r"(?:(?:(?:你们?|您|大家)好|嗨|哈[喽啰罗]|[早晚]上好|[上中下]午好|早安|晚安|在吗|在不在|"
    r"谢谢(?:你们?|您|啦)?|多谢|感谢|辛苦了?|好的|好吧|知道了|明白了?|收到|懂了|嗯+|哦+|噢+|"
    r"再见|拜拜|你是谁|你能做什么|你会什么|你可以做什么|怎么用|帮助|"
    r"hi|hello|hey|thanks|thankyou|thx|ok|okay|bye|goodbye|help)"
    r"[啊呀啦哈吗呢嘛哦了]*)+",
    re.IGNORECASE,
)
SMALL_TALK_REPLY = "我根据资料库中的文章回答问题，并注明出处。请直接提问，例如某个园区主攻什么产业、某家企业何时成立。"
# A turn with no word to look up ("？？？", "请问", "哪里" with no chat before it).
NOTHING_ASKED_REPLY = "没有看出要查找什么。请把问题说具体些，写出要问的园区、企业或事件的名称。"
# Replies that answer nothing: a follow-up finds no subject in them.
NON_ANSWERS = (NOT_FOUND, SMALL_TALK_REPLY, NOTHING_ASKED_REPLY)


def small_talk(text: str) -> bool:
    """Is the whole turn small talk (:data:`SMALL_TALK`), punctuation, emoji and spaces aside?"""
    core = re.sub(r"[\W_]+", "", normalize_width(text))
    return SMALL_TALK.fullmatch(core) is not None


# What kind of fact a question asks for, from its interrogative word.
# 哪几个 asks which ones, not how many; 这几年, 近几年, 好几家 and 十几家 ask nothing.
ASKS_NUMBER = re.compile(
    r"多少|(?<![哪这那近前好十])几[个家项年座所次位名倍成亿万千百十天秒分种条款台辆人大%]"
    r"|多大|多长|多高|多远|多久|比例|比重|百分之|占比|第几"
)
# A question for the day ("哪一天", "几月几号") is answered by a day, not a month or a year.
ASKS_DAY = re.compile(r"哪一?天|哪一?日|几月几[日号]|几号")
ASKS_DATE = re.compile(rf"何时|什么时候|哪一?年|哪几年|哪些年|哪个月|几月|日期|{ASKS_DAY.pattern}")
ASKS_REASON = re.compile(r"为什么|为何|原因|何以|怎么会")
# A question for several things (哪些, 哪几, 分别) is answered by a sentence that lists some:
# "A、B", "“A”“B”", "A以及B" (the reader's type check, like a number for 多少; 和 joins too much
# else to count).
ASKS_LIST = re.compile(r"哪些|哪几|分别")
ENUMERATION = re.compile(r"、|”“|以及")
ASKS_NAME = re.compile(r"叫什么|什么名|名称|称为什么|称作什么|简称")
# Any interrogative word: the words next to it name the attribute asked about
# ("采用什么模式", "第一时间找谁"), which the answering sentence states.
# 几 in 几十/十几/好几/几乎 and 何 in 任何 ask nothing: the asked attribute is next to the real
# question word.
QUESTION_WORD = re.compile(
    r"什么|哪|多少|(?<![十百千万好])几(?![十百千万亿乎])|谁|(?<!任)何|怎么|怎样|如何|是否|多大|多长|多高|多久|多远|吗"
)
ATTRIBUTE_REACH = 6  # characters either side of the question word
# Questions answered by a name: which one, who, what is it called.
ASKS_ENTITY = re.compile(r"哪[个家所座位款项类些里]|哪一[个家所座位款项类]|谁|什么(?:企业|公司|平台|项目|产业|名字|机构|园区|地方|产品|技术)|叫什么|名称|简称")
# How the names of organisations and places end: a name-like word that ends so can answer
# 哪个/哪家 questions and be the subject a follow-up refers to.
NAME_SUFFIX = re.compile(
    r"(?:公司|集团|平台|小镇|谷|园|港|新区|开发区|保税区|高新区|协同区|中心|基地|实验室|研究院|大学|学院|医院|"
    r"联合会|协会|工会|街道|社区|村|县|镇|市)$"
)
# How the names of places end (a zone, a district, a town, a park): what they hold is named after 的.
PLACES_ = "新区|开发区|高新区|保税区|综保区|区|市|县|镇|街道|小镇|园|港|谷"
PLACE_SUFFIX = re.compile(rf"(?:{PLACES_})$")
# A part of a place, no subject of its own: a place within it, or a block of it ("核心区块").
PLACE_PART = re.compile(rf"(?:{PLACES_}|区块)$")
# What a question word asks about right after it ("在哪个城市举办": 城市 is asked, no subject).
ASKED_KIND = re.compile(r"(?:哪[个家些位所座条种一]?|什么|多少)$")
# What may follow the first word of a name up to its suffix ("西湖" + "科技园"): no 的, no copula,
# no question word, no preposition, demonstrative or 说 ("吉利在钱塘新区" is no name).
NAME_GROWTH = re.compile(r"(?:(?![的是哪谁几何在把被从向对给与和及这那各该此其说为]|什么|多少)[\u4e00-\u9fffA-Za-z0-9]){0,16}?(?:区|园|港|谷|城|公司|集团|平台|基地|中心|县|市|镇)")
# What is left of a name without its suffix must name something: "有限公司" alone does not.
GENERIC_STEM = re.compile(r"^(?:股份)?有限$|^股份$|^[^\u4e00-\u9fff]*$")
NUMERIC = re.compile(r"[\d一二三四五六七八九十百千万亿两]")
NUMERALS_ = "0-9一二三四五六七八九十两半"
# Who: a role, and the person's name right after it or before a verb of saying. After a role the
# name ends at punctuation, a verb of saying or the word the sentence goes on with ("局长某某用…",
# "总经理某某在…", "负责人某某带领…"); a name is two or three characters.
ROLES = (
    "党工委书记|副书记|书记|副主任|主任|校长|院长|所长|董事长|总经理|副总经理|经理|总裁|创始人|创办人|负责人|局长|区长|"
    "市长|县长|镇长|主席|秘书长|院士|教授|研究员|委员|代表|总监|总工程师|首席执行官|CEO"
)
ROLE_WORD = re.compile(ROLES)
ASKS_PERSON = re.compile(rf"谁|哪位|(?:{ROLES})(?:是|叫|的名字|姓)")
# Asks for the person holding a role ("董事长是谁"): only a person's name answers. A bare 谁
# ("由谁来担任", "找谁") may be answered by an agent that is no person ("委领导", "管理办公室").
ASKS_ROLE_HOLDER = re.compile(rf"(?:{ROLES})(?:是|叫|的名字|姓)|哪位")
AGENT = re.compile(r"领导|负责人|专家|团队|办公室|部门|单位|企业|机构|政府|管委会|委员会|法院|公司|集团|协会|学会|中心|街道")
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
    "姜崔钟谭陆汪范金石廖贾夏韦付方邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤葛楼屠应鲍"
    "施管傅喻蒲鲁柏童庞詹纪柯祝洪殷郁岳翁甘焦舒聂耿裴凌樊阮柴郎盛俞季毕温倪苗祁尤卜艾单"
)
PERSON = re.compile(
    rf"(?:{ROLES})\s*([{SURNAMES}][\u4e00-\u9fff]{{1,2}}?)(?=[，,。、说表介认指坦告：:（(看也及等和与在用对带建面要将为就把向曾还都已亲强称透]|$)"
    # Before a verb of saying, with or without the role between ("某某董事长说").
    rf"|([{SURNAMES}][\u4e00-\u9fff]{{1,2}}?)(?:{ROLES})?(?=说|表示|介绍|认为|指出|坦言|告诉)"
    # Introduced by name: "获奖的选手叫某某，…".
    rf"|(?<=叫)([{SURNAMES}][\u4e00-\u9fff]{{1,2}}?)(?=[，,。、；])"
    # A foreign name, its parts joined by a middle dot, ends where the text moves on: not
    # "飞跃·某某女子半程马拉松" (a brand and an event), nor a quoted title ("“某某论坛·春季”").
    r"|([\u4e00-\u9fff]{1,5}·[\u4e00-\u9fff]{1,8})(?![\u4e00-\u9fff”\"」』’])"
    # A person card (see person_cards): the name on its line, then the organisation and title.
    # The name may end a heading it was glued to when the article was cleaned (…更足了郎秋蕾).
    rf"|(?<![{SURNAMES}])([{SURNAMES}][\u4e00-\u9fff]{{1,2}})\n(?=[^。！？；]{{0,40}}(?:{ROLES}))"
)
# A person's name alone on a line, as interview cards print it beside the job title
# ("杭州临江高科园管理办公室主任" / "冯宝林"), and a line ending in a job title.
NAME_LINE = re.compile(rf"^[{SURNAMES}][\u4e00-\u9fff]{{1,2}}$")
# A name glued to the end of the heading or caption printed above the card.
GLUED_NAME = re.compile(rf"[^{SURNAMES}][{SURNAMES}][\u4e00-\u9fff]{{1,2}}$")
ROLE_LINE = re.compile(rf"(?:{ROLES})[、\u4e00-\u9fff]{{0,3}}$")
# A development zone is named by what precedes its generic suffix ("某某经济技术开发区").
ZONE = re.compile(r"(?:国家级)?(?:高新技术产业开发区|经济技术开发区|经济开发区|综合保税区|综保区|经开区|开发区|高新区)")
# A zone named in a question ("永康经济开发区"): its name is what precedes the suffix.
ZONE_NAME = re.compile(rf"([\u4e00-\u9fff]{{2,4}}?){ZONE.pattern}")
# A share or rate is answered by a percentage (or 几成/几倍), not by any amount.
ASKS_RATE = re.compile(r"百分之|百分比|百分点|增长率|增速|增幅|占比|比重|比例")
RATE_VALUE = re.compile(
    rf"[\d{NUMERALS_}]+(?:\.\d+)?\s*(?:%|％|个百分点|成|倍)|百分之[{NUMERALS_}]+"
    # A fraction is a share too: "1/3的员工", "三分之一".
    rf"|(?<![\d/])\d{{1,2}}\s*/\s*\d{{1,2}}(?![\d/])|[{NUMERALS_}]+分之[{NUMERALS_}]+"
)
HAS_NAME = re.compile(r"“[^”]{2,20}”|《[^》]{2,30}》|「[^」]{2,20}」")
QUOTED = re.compile(r"“([^“”]{1,20})”")  # a name set apart in quotation marks, and its text
# Where something is: asked outright, or "X在哪里" when X is a name ("优势在哪里" asks what, not where).
ASKS_LOCATION = re.compile(r"位于哪|坐落(?:在|于)?哪|(?:地点|位置)(?:是|在)|在哪个?(?:区|县|市|镇|街道|城市|省|位置|地方)|什么地方|什么位置")
ASKS_WHERE = re.compile(rf"哪里|哪儿|{ASKS_LOCATION.pattern}")
WHERE = re.compile(r"([\u4e00-\u9fffA-Za-z0-9]{2,16})在哪(?:里|儿)")
PLACE_VERB = "位于"  # how the articles most often say where a thing is
NUMERALS = "0-9一二三四五六七八九十百千万亿两半"
# A day (a numeral before 号 alone may be a name: "一号工程", "3号楼".)
HAS_DAY = re.compile(r"\d{1,2}\s*日|月\s*(?:\d{1,2}|[一二三四五六七八九十]{1,3})\s*[日号]")
HAS_DATE = re.compile(r"\d{4}\s*年|\d{1,2}\s*月|\d{1,2}\s*日|今年|去年|明年|年底|年初|上半年|下半年|季度")
HAS_REASON = re.compile(r"因为|由于|原因|为了|所以|因此|从而|得益于|导致|使得|以便")
# A sentence that opens with a pronoun needs the sentence before it to name its subject.
ANAPHOR = re.compile(r"^[^，,。]{0,6}[，,]?[“\"]?(她|他|它|其[^他中次余实]|该[^地区市县]|这[里家位些]|那[里家位些]|此处)")
UNITS = (
    "万亿元|亿美元|万美元|亿元|万元|元|平方公里|平方千米|平方米|万平方米|立方米|公顷|公里|千米|厘米|毫米|纳米|米|亩|"
    "千克|公斤|千瓦时|千瓦|兆瓦|英寸|万人次|人次|万人|人|名|家|个|项|次(?!性)|场|轮|期|种|类|件(?!事)|份|例|"
    "%|倍|年|个月|周|天|小时|分钟|秒|吨|辆|台|套|所|座|栋|条|款|批|届|位|成"
)
DATE_VALUE = re.compile(r"\d{4}年(?:\d{1,2}月)?(?:\d{1,2}日)?|\d{1,2}月\d{1,2}日|\d{1,2}月")
# The noun a 多少/几 question counts ("多少家企业" -> 企业), when it follows the measure word.
COUNTED_NOUN = re.compile(r"(?:多少|几)(?:万|千|百)?(?P<measure>[个家项名位台辆条款套所座栋批届次件大])(?P<noun>[\u4e00-\u9fff]{2})")
# Never from inside a number ("3万余名" is not "万余名") or an ordinal ("第一期" counts nothing);
# 余/多 before or after the magnitude.
NUMBER_VALUE = re.compile(
    rf"(?<![\d.第])(?:约|近|超|超过|逾|达|共)?(?:\d+(?:\.\d+)?|[一二三四五六七八九十两百千万]+)(?:多|余)?(?:万亿|亿|万|千)?"
    rf"(?:多|余)?(?:{UNITS})(?:以上|左右|多)?"
    # Counted the way articles count what they list: "六大产业平台", "五大先进制造业".
    r"|[二三四五六七八九十两]大"
    r"|\d+(?:\.\d+)?%"
)
# Units of measure an answer must repeat ("多少平方公里" is not answered by "27家").
# Counting words (家, 个, 名, 人, 项 ...) are left out: answers swap them for their kin or a
# generic count ("几个平台" / "五大平台"), which COUNT_MEASURE allows.
MEASURES = (
    "万亿元|亿美元|万美元|亿元|万元|美元|元|平方公里|平方千米|万平方米|平方米|立方米|公顷|公里|千米|厘米|毫米|纳米|"
    "米(?![面粮饭])|亩|吨|千克|公斤|千瓦时|千瓦|兆瓦|英寸|"
    "%|倍|成(?![员本果立为功交绩])|天(?![然津下数])|小时|分钟|秒"
)
# A count asked in a measure word of its own ("多少台", "几家医院") is answered by a number
# counted in it, one of its kin, or a generic count ("五大", "三个"); not by a sum of money,
# a span of years or a count of something else ("一名" for "多少起纠纷").
COUNT_MEASURE = re.compile(r"(?:多少|(?<![哪这那近前好十第])几)\s*(?:万|千|百)?\s*(名|人|位|家|户|台|套|所|座|栋|幢|条|项|件|处|起|片|场|辆|款|篇|只|张|块|间|支)")
SAME_COUNT = {"名": "名|人|位", "人": "人|名|位", "位": "位|名|人", "家": "家|户", "户": "户|家", "台": "台|套",
              "套": "套|台", "栋": "栋|幢", "幢": "幢|栋", "起": "起|件", "件": "件|起"}
# An area ("面积有多大") is answered in a unit of area: a count of things ("一种", "24所") states none.
ASKS_AREA = re.compile(r"面积[^，。？?]{0,6}(?:多大|多少|几)|(?:多大|多少)(?:的)?(?:建筑|占地)?面积")
AREA_UNITS = "平方|亩|公顷|(?<=万)方"
SAME_UNIT = {"公里": "公里|千米", "千米": "公里|千米", "平方公里": "平方公里|平方千米", "平方千米": "平方公里|平方千米",
             "千克": "千克|公斤", "公斤": "千克|公斤",
             "成": "成|%"}
# The unit a 多少/几 question asks its number in; ordinals (第几) ask none. A Latin unit
# ("多少PFlops") stands alone: letters run into Chinese are a name ("多少AI企业").
ASKED_UNIT = re.compile(
    r"(?<!第)(?:多少|几)\s*(?:万亿|亿|万|千|百)?\s*("
    + "|".join(sorted(MEASURES.split("|"), key=len, reverse=True))
    + r"|[A-Za-z]+(?=[的左\s，。？！、,.?!)）]|$))"
)
# Asked for an amount of money ("投入了多少资金", "价值多少"), which is answered in a currency; a
# change ("增长了多少") or a count ("投资了多少个项目") is not. Dates, rates and ordinals are
# checked first (value_check).
_MONEY = "资金|投资额?|投入|金额|收入|营收|产值|价值|利润|税收|销售额|成交额|融资|经费|费用|奖金"
ASKS_MONEY = re.compile(
    rf"多少钱|(?:{_MONEY})[^，,。？?]{{0,6}}?(?:多少|几)(?!\s*[个家项名所座条款件台辆人次倍成年天])"
    rf"|(?:多少|几)[^，,。？?个家项名所座条件]{{0,4}}?(?:{_MONEY})"
)
ASKS_CHANGE = re.compile(r"增长|增加|提高|提升|下降|减少|降低|翻|涨")
# Large sums often drop the 元: "约20亿", "500万"; or name no number at all: "营收过亿", "破亿".
MONEY_VALUE = re.compile(rf"[\d{NUMERALS}]\s*(?:多|余)?\s*(?:(?:万亿|亿|万)|(?:千)?\s*(?:元|美元|欧元|港元|日元))"
                         r"|[过破上超逾数]\s*(?:百|千)?\s*(?:万亿|亿|万元)")
# Years the question or answer names ("2021年度", "2023—2025年": every year of a range).
YEARS = re.compile(r"(?<!\d)((?:19|20)\d{2})(?:\s*[-—–~至到]\s*((?:19|20)\d{2}))?(?=\s*年)")
# Only a county is used among administrative suffixes: 市, 镇 and 乡 end too many common
# words (城市, 上市, 大都市, 各市, 鱼米之乡).
COUNTY = "县"
ORDINAL = re.compile(rf"第\s*[\d{NUMERALS}]+")
CLAUSE_BREAK = re.compile(r"[，,；;：:。！？!?]")
CLAUSE = re.compile(rf"[^{CLAUSE_BREAK.pattern[1:-1]}]+{CLAUSE_BREAK.pattern}*")
TERMINAL = tuple("。！？!?；;…”\"）)")
LABELLED = re.compile(r"^[^：:]{2,12}[：:]\s*\S{2,}")  # "label: value", the way lists state facts
LIST_ITEM_END = ("；", ";")  # a sentence ending so is one item of a list whose items name their own subjects
MARKER = re.compile(r"\[\d+\]")

# A demonstrative with a classifier ("这家", "那座", "该") points at something named before; the
# noun after it says what kind of thing it is ("这家企业", "这所学校").
DEMONSTRATIVE = re.compile(
    r"(?:这|那)一?(?:个|家|所|次|场|款|位|项|座|批|条|种|届|档|套|只|支|轮|期|份|件|片|栋|名)|(?<![应活])该(?=[\u4e00-\u9fff])(?![如怎不会])"
)
# What names of a kind end with, for kind nouns whose names mostly do not end in the noun itself
# ("这个园区" may be 杭州医药港 or 江东芯谷; "这家公司" 某某集团). Other nouns: the name ends like it.
KIND_ENDINGS = {
    "园区": ("园", "区", "港", "谷", "小镇", "城", "基地"),
    "平台": ("平台", "园", "区", "港", "谷", "小镇", "城", "基地", "中心"),
    "公司": ("公司", "集团"),
    "企业": ("公司", "集团", "企业"),
    "学校": ("学", "校", "学院"),
}
# Pronouns for a group of people: a company or a team, never a place.
GROUP_PRONOUNS = ("他们", "她们")
# "钱塘新区的“投资之家”": a quoted name after 的 is the thing named, the words before it where it is.
# A name's bracketed part: the district of a zone ("某某高新区（东湖）"), a country ("中国（波兰）…").
NAME_BRACKET = re.compile(r"[（(][\u4e00-\u9fffA-Za-z·・]{1,8}[）)]")
QUOTED_HEAD = re.compile(r"的[“\"「]([^”\"」]{2,16})[”\"」]")
# Pronouns and demonstratives that stand for the subject of the previous turn.
ONE_PERSON_ = r"(?<![其吉])他(?![人们])|她(?!们)"  # he, she (not 其他, 他人)
PRONOUN = re.compile(
    rf"它们|它的|它|他们|她们|{ONE_PERSON_}|{DEMONSTRATIVE.pattern}|其(?=[^他中次余实])|此地|那里|这里|那边|那儿|这儿"
    r"|^这(?=[占是有在为比])"
)
# Pronouns, demonstratives and elliptical endings that make a turn lean on the previous one.
FOLLOW_UP = re.compile(
    rf"它|他们|她们|{ONE_PERSON_}|其中|{DEMONSTRATIVE.pattern}|这里|那里|那边|那儿|这儿|这些|那些|此[处地外]|上述|前者|后者"
    r"|^(那|那么|还有|另外|此外|同时|以及|并且)|^这(?=[占是有在为比])|呢[？?。\s]*$"
)
# "从75秒缩减至5秒": a change states two values; a question about where it went
# ("缩短到几秒", "降至多少") asks for the second, one about where it started ("从多少") the first.
CHANGE_FROM = re.compile(r"从(?:原来|原先|之前|以前)?的?\s*$")  # right before the value it changed from
CHANGE_TO = re.compile(rf"[^，。；,;]{{0,8}}?(?:至|到|为|成|[升涨增降减](?=\s*[{NUMERALS_}]))\s*")
ASKS_FROM = re.compile(r"从|原来|原先|原本|之前|以前|[成造设革建]前")
# Openers and closers an elliptical follow-up wraps its new piece in ("那市级的呢？").
# A word that opens a follow-up ("那…", "还有…"), and the edges of an ellipsis ("那…的呢？").
OPENING = re.compile(r"^(?:那么|那|还有|另外|此外|同时|以及|并且)[，,]?")
ELLIPSIS_EDGES = re.compile(rf"{OPENING.pattern}|的?呢?[？?。！!\s]*$")
CJK_CHAR = re.compile(r"[\u4e00-\u9fff]")
# A word this long or longer may abbreviate a longer name, skipping at most this many characters
# between two of its own.
ABBREVIATION_MIN_CHARS = 3
ABBREVIATION_GAP = 3


class ValueCheck(NamedTuple):
    """What an answer must contain to state the kind of value a question asks for."""

    pattern: re.Pattern[str]
    strip_dates: bool  # dates are removed before matching (a quantity that is not a date)
    kind: str  # unit, money, date, rate, ordinal or number (list: list_check)


@lru_cache(maxsize=4096)
def abbreviation_of(word: str) -> re.Pattern[str] | None:
    """What ``word`` abbreviates, if it may be an abbreviation: its characters in order with a few
    between each within one clause ("综保区" in "综合保税区"). Short words are not: any two
    characters occur in order somewhere."""
    if len(word) < ABBREVIATION_MIN_CHARS or not CJK_CHAR.match(word):
        return None
    gap = f"[^，,。；;：:！？!?\\n]{{0,{ABBREVIATION_GAP}}}?"
    return re.compile(re.escape(word[0]) + "".join(gap + re.escape(c) for c in word[1:]))


def contains_word(text_key: str, word: str) -> bool:
    """``word`` is in the text, or the text writes out in full what ``word`` abbreviates."""
    if word in text_key:
        return True
    pattern = abbreviation_of(word)
    return pattern is not None and pattern.search(text_key) is not None


def name_like(word: str, tokenizer: Tokenizer) -> bool:
    """Could ``word`` name something: two characters or more, no numeral or pronoun, and a
    corpus word, a proper noun or a word jieba does not know (not "推进", "打造")."""
    return (len(word) >= 2 and not NUMERIC.search(word) and not PRONOUN.search(word)
            and (tokenizer.is_name(word) or tokenizer.place_like(word)))


def mentions_name(text: str, tokenizer: Tokenizer) -> bool:
    """Does ``text`` hold a word that could name something (:func:`name_like`)?"""
    return any(name_like(word, tokenizer) for word, _ in tokenizer.terms(text))


def asks_place(question: str, is_name: Callable[[str], bool]) -> bool:
    """Whether the question asks where something is; ``is_name`` tells a name from a common word."""
    if ASKS_LOCATION.search(question):
        return True
    m = WHERE.search(question)
    return m is not None and is_name(m.group(1))


def number_in(units: str, after: str = "", numerals: str = NUMERALS) -> re.Pattern[str]:
    """A number (not an ordinal: 第五) in one of ``units``, a regex alternation ("平方米|亩");
    ``numerals`` are the characters it may end with (without 万, "万亩" is no area)."""
    return re.compile(rf"(?<!第)[\d{numerals}]\s*(?:多|余)?\s*(?:万亿|亿|万|千|百)?\s*(?:{units}){after}", re.IGNORECASE)


@lru_cache(maxsize=4096)  # the reader, the judge and the writer each ask it of one question
def value_check(question: str) -> ValueCheck | None:
    """What an answer must contain to state the kind of value the question asks for.

    A number in the unit of measure asked ("多少平方公里" needs "…平方公里"; 几成
    also takes a percentage), else a date (何时/哪一年), else a rate, else an
    ordinal (第几), else a quantity that is not a date (多少/几). None when the
    question asks for no value.
    """
    asked = ASKED_UNIT.search(question)
    if asked:
        return ValueCheck(number_in(SAME_UNIT.get(asked.group(1)) or re.escape(asked.group(1))), False, "unit")
    counted = COUNT_MEASURE.search(question)
    if counted:
        same = SAME_COUNT.get(counted.group(1), counted.group(1))
        return ValueCheck(number_in(f"{same}|个|大|种|类", after="(?!事)"), True, "number")
    if ASKS_DAY.search(question):
        return ValueCheck(HAS_DAY, False, "date")
    if ASKS_DATE.search(question):
        return ValueCheck(HAS_DATE, False, "date")
    if ASKS_RATE.search(question):
        return ValueCheck(RATE_VALUE, False, "rate")
    if ASKS_AREA.search(question):
        return ValueCheck(number_in(AREA_UNITS, numerals=NUMERALS_), False, "unit")
    if "第几" in question:
        return ValueCheck(ORDINAL, False, "ordinal")
    if ASKS_MONEY.search(question) and not ASKS_CHANGE.search(question):
        return ValueCheck(MONEY_VALUE, False, "money")
    if ASKS_NUMBER.search(question):
        return ValueCheck(NUMBER_VALUE, True, "number")
    return None


def list_check(question: str) -> ValueCheck | None:
    """For a question for several things that asks no value (:data:`ASKS_LIST`), what its answer
    lists them with (:data:`ENUMERATION`); None otherwise. Apart from :func:`value_check`: the
    judge's value signals were fitted on values, not lists."""
    if value_check(question) is None and ASKS_LIST.search(question):
        return ValueCheck(ENUMERATION, False, "list")
    return None


def lacks_value(check: ValueCheck | None, text: str) -> bool:
    """True when ``text`` does not state the value :func:`value_check` asks for."""
    if check is None:
        return False
    return not check.pattern.search(DATE_VALUE.sub("", text) if check.strip_dates else text)


def person(text: str, question: str = "") -> str | None:
    """The first person's name the text gives after a role or before a verb of saying, other
    than one the question names (who went with 某某 is not 某某)."""
    for m in PERSON.finditer(text):
        name = next(g for g in m.groups() if g)
        # A role that starts with a surname's character ("董事长说") is nobody's name.
        if name not in question and not ROLE_WORD.fullmatch(name):
            return name
    return None


def person_cards(lines: Sequence[str]) -> list[range]:
    """The runs of ``lines`` (one article's sentences, in order) that make one person card.

    A card is a name on its own line with the organisation and job title on the lines after
    it (the first line ending in a title closes it), or with the title line right before it.
    Cited apart, the title would answer "…主任是谁" without the name. Each line belongs to
    one card at most. Cleaning may have glued the name to the end of the heading above it
    ("…我们的信心更足了郎秋蕾"): such a line opens a card too, when the lines after it close one
    and no card with a name of its own has them.
    """
    def name(i: int) -> bool:
        return bool(NAME_LINE.match(lines[i])) and not ROLE_LINE.search(lines[i])

    def glued(i: int) -> bool:
        return bool(GLUED_NAME.search(lines[i])) and label(i, longest=50) and not ROLE_LINE.search(lines[i])

    def label(i: int, longest: int = 30) -> bool:
        return len(lines[i]) <= longest and not lines[i].endswith(TERMINAL) and not name(i)

    def role(i: int) -> bool:
        return bool(ROLE_LINE.search(lines[i].rstrip("、，,：: ")))

    def closes(n: int) -> int | None:
        """The title line that closes a card opened at ``n``."""
        for j in range(n + 1, min(n + 3, len(lines))):
            if j in used or not label(j):
                return None
            if role(j):
                return j
        return None

    cards: list[range] = []
    used: set[int] = set()
    for n in range(len(lines)):
        if not name(n) or n in used:
            continue
        end = closes(n)
        if end is not None:
            card = range(n, end + 1)
        # The title line before a name may carry the heading it was printed under.
        elif n and n - 1 not in used and label(n - 1, longest=50) and role(n - 1):
            card = range(n - 1, n + 1)
        else:
            continue
        used.update(card)
        cards.append(card)
    for n in range(len(lines)):
        if n not in used and glued(n) and (end := closes(n)) is not None:
            used.update(range(n, end + 1))
            cards.append(range(n, end + 1))
    return sorted(cards, key=lambda r: r.start)


def person_missing(question: str, text: str) -> bool:
    """Asks who, and ``text`` names nobody who answers: no person (or only the deputy of the
    role asked), and for a bare 谁 no agent either."""
    if not ASKS_PERSON.search(question):
        return False
    if person(text, question) is not None and not deputy_only(question, text):
        return False
    return bool(ASKS_ROLE_HOLDER.search(question)) or not AGENT.search(text)


def deputy_only(question: str, text: str) -> bool:
    """The question asks for a role ("总经理") that the text gives only to a deputy ("副总经理")."""
    # A role the question asks of a deputy itself ("哪位副秘书长": ROLES has no 副秘书长) is no role.
    roles = {m.group() for m in re.finditer(ROLES, question)
             if not m.group().startswith("副") and question[m.start() - 1 : m.start()] != "副"}
    for role in roles:
        at = [m.start() for m in re.finditer(re.escape(role), text)]
        if at and all(i and text[i - 1] == "副" for i in at):
            return True
    return False


def zone_names(text: str) -> set[str]:
    return {m.group(1) for m in ZONE_NAME.finditer(text)}


def zone_named(name: str, question: str, passage: str) -> bool:
    """Does ``passage`` name the zone ``question`` calls ``name`` (a :func:`zone_names` stem)? By
    that name, or by the district bracketed after it ("青萝高新区（东湖）" is "高新区(东湖)" and
    "东湖高新区")."""
    if name in passage:
        return True
    m = re.search(rf"{re.escape(name)}{ZONE.pattern}\s*[（(]([^）)]{{2,8}})[）)]", question)
    return m is not None and m.group(1) in passage


# A name of a kind a near-miss may swap for its sibling's ("游泳馆" asked, "文教馆" stated): a
# stem of two to four characters before the kind noun, not across 的.
KIND_NAME = re.compile(
    r"((?:(?!的)[\u4e00-\u9fff]){2,4}?)"
    r"(街道|社区|村|镇|县|馆|中学|小学|学校|医院|公司|集团|产业园|园区|小镇|中心|开发区|高新区|新区)"
)
# What cannot open a name's stem: a demonstrative or quantifier ("该中心", "各街道").
NOT_NAME_STEM = re.compile(r"^[这那该本各全每此其某一]")
# Function words no name runs over (prepositions, particles, the copula, 说).
FUNCTION_CHARS_ = "的了把在为到将于对和与由向从是有以被给及说"
NOT_IN_NAME = re.compile(rf"[{FUNCTION_CHARS_}个]|哪|什么|几|多少")
ASKS_COMPANY = re.compile(r"哪一?家|(?:哪[个些]|什么)(?:企业|公司|集团)")
# A company's full name, which jieba splits: "鹰眼(杭州)科技有限公司", "某某（中国）投资有限公司".
# It starts after a function word or punctuation and may hold a bracketed place.
COMPANY_NAME = re.compile(
    rf"[^{FUNCTION_CHARS_}哪这那该其各每此某，。、；：“”‘’《》,;:\s（）()]{{2,14}}?"
    r"(?:\s*[（(]\s*[\u4e00-\u9fff]{1,6}\s*[）)]\s*[\u4e00-\u9fff]{0,10}?)?(?:股份有限公司|有限责任公司|有限公司|集团)"
)
GENERIC_STEM_END = re.compile(r"有限$|股份$")


def names_a_rival(question: str, sentence: str, is_name: Callable[[str], bool] = lambda _: True) -> bool:
    """The sentence names something of a kind the question names (a 街道, a 馆, a 公司…),
    but another one, and not the one asked about. ``is_name`` tells a rival's stem ("白沙经济")
    from other words before the kind ("推进开发区", "不断扩大社区"); the question's own may be a
    common word (游泳馆)."""
    def named(text: str, check: Callable[[str], bool] = lambda _: True) -> list[tuple[str, str]]:
        out = []
        for m in KIND_NAME.finditer(text):
            # A name does not run over a function word or a question word ("落户在钱塘新区" names
            # 钱塘新区, "哪个工业园区" none), nor is "某某科技有限公司" told apart by "科技有限".
            stem = NOT_IN_NAME.split(m.group(1))[-1]
            if (len(stem) >= 2 and not NOT_NAME_STEM.search(stem) and not GENERIC_STEM_END.search(stem)
                    and check(stem)):
                out.append((stem, m.group(2)))
        return out

    stated = named(sentence, is_name)
    for stem, kind in named(question):
        if stem + kind in sentence:
            continue
        # A longer or shorter form of the same name is the same thing ("临江" / "临江高新").
        if any(k == kind and other not in stem and stem not in other for other, k in stated):
            return True
    return False


def years(text: str) -> set[int]:
    """Every year ``text`` names, ranges expanded (at most 20 years each)."""
    out: set[int] = set()
    for first, last in YEARS.findall(normalize_width(text)):
        lo = int(first)
        hi = int(last) if last and int(last) >= lo else lo
        out.update(range(lo, min(hi, lo + 20) + 1))
    return out


# An edition, batch, phase or place in a ranking: "第二届", "首批", "第5期", "二期" (a project's
# phase), "第三家", "二等奖", "亚军".
EDITION = re.compile(
    r"(?:第\s*([\d一二三四五六七八九十两]+)|(首))\s*(届|批|期|轮|代|季|家|名)"
    r"|(?<![\d一二三四五六七八九十两第])([一二三四五六七八九十])(期|等奖)"
    r"|(冠|亚|季)军"
)
PLACES = {"冠": 1, "亚": 2, "季": 3}


def editions(text: str) -> set[tuple[str, int]]:
    """Every edition or rank ``text`` names, as (what is counted, its number): 首届 is (届, 1),
    亚军 is (军, 2)."""
    out = set()
    for m in EDITION.finditer(normalize_width(text)):
        number, first, kind, phase, phase_kind, place = m.groups()
        if place:
            out.add(("军", PLACES[place]))
            continue
        n = 1 if first else chinese_number(number or phase)
        if n is not None:
            out.add((kind or phase_kind, n))
    return out


def chinese_number(text: str) -> int | None:
    """1-99 written in digits or Chinese numerals ("二十三", "两"), else None."""
    if text.isdigit():
        return int(text)
    digits = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"两": 2}
    if "十" in text:
        tens, _, ones = text.partition("十")
        if (tens and tens not in digits) or (ones and ones not in digits):
            return None
        return digits.get(tens, 1) * 10 + digits.get(ones, 0)
    return digits.get(text) if len(text) == 1 else None


# A year named from the time of writing, and the level of government that runs or ranks a thing.
RELATIVE_YEAR = re.compile(r"前年|去年|今年|明年")
LEVEL = re.compile(r"(国家|省|市|区|县)级")


def year_conflict(question: str, answer: str) -> bool:
    """The question names a year, an edition (第二届, 二期) or a level (省级); the answer names
    others of that kind but not it ("首届" for a question about the second, "今年" for
    "去年", "省级" for "市级")."""
    def named(pattern: re.Pattern[str], text: str) -> set[tuple[str, int | str]]:
        return {(pattern.pattern, m.group()) for m in pattern.finditer(text)}

    return (_contradicts({("年", y) for y in years(question)}, {("年", y) for y in years(answer)})
            or _contradicts(editions(question), editions(answer))
            or any(_contradicts(named(p, question), named(p, answer)) for p in (RELATIVE_YEAR, LEVEL)))


def _contradicts(asked: set[tuple[str, int | str]], stated: set[tuple[str, int | str]]) -> bool:
    """``stated`` names (kind, value) pairs of a kind ``asked`` names, and none of those asked."""
    kinds = {kind for kind, _ in stated}
    return any(kind in kinds for kind, _ in asked) and not asked & stated


def is_follow_up(question: str) -> bool:
    """Does this turn need the previous turns to be understood?"""
    return bool(FOLLOW_UP.search(question)) or len(CJK_CHAR.findall(question)) <= 6
