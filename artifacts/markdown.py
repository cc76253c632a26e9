"""Markdown documents rendered to safe HTML (no scripts, no inline handlers)."""

import re

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

ALLOWED_TAGS = {
    "a", "abbr", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "img", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "th", "thead", "tr", "ul",
}


def render_markdown(text: str, heading_offset: int = 1) -> SafeString:
    """Safe HTML; headings move down ``heading_offset`` levels to sit under the page's own."""
    html = markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"])
    if heading_offset:
        html = re.sub(r"<(/?)h([1-6])>", lambda m: f"<{m.group(1)}h{min(int(m.group(2)) + heading_offset, 6)}>", html)
    return mark_safe(nh3.clean(html, tags=ALLOWED_TAGS, link_rel="noopener noreferrer nofollow"))
