"""Post extraction from crawled pages: gnuboard and XE boards, phpBB and Discourse threads, hostile pages, and the
board time formats. The fixtures are hand-written copies of each engine's default markup."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingest.extract import MAX_LINKS, MAX_MEDIA, Page, SiteSelectors, extract_page
from ingest.times import parse_post_time
from jiwoom.shared.times import KST

NOW = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)  # 15:00 KST, a Saturday


def kst(*args: int) -> datetime:
    return datetime(*args, tzinfo=KST).astimezone(UTC)


# --- fixtures ---------------------------------------------------------------------------------------------------

GNUBOARD_LIST = """<!doctype html>
<html lang="ko"><head><meta charset="utf-8"><title>자유게시판 1 페이지 | 예제 커뮤니티</title>
<script>var g5_url = "https://board.example.kr";</script></head>
<body>
<header id="hd"><div id="logo">
  <a href="https://board.example.kr/"><img src="/theme/basic/img/logo.png" alt="예제"></a></div>
<nav id="gnb"><ul>
  <li><a href="https://board.example.kr/bbs/board.php?bo_table=free">자유게시판</a></li>
  <li><a href="https://board.example.kr/bbs/board.php?bo_table=humor">유머</a></li>
  <li><a href="https://partner.example.com/">제휴</a></li>
  <li><a href="mailto:admin@board.example.kr">문의</a></li>
</ul></nav></header>
<div id="bo_list"><form name="fboardlist">
<table><caption>자유게시판 목록</caption>
<thead><tr><th>번호</th><th>제목</th><th>글쓴이</th><th>날짜</th></tr></thead>
<tbody>
<tr><td class="td_num2">1024</td>
  <td class="td_subject"><div class="bo_tit">
    <a href="https://board.example.kr/bbs/board.php?bo_table=free&amp;wr_id=1024&amp;page=1">오늘 올라온 글</a>
    <a href="https://board.example.kr/bbs/board.php?bo_table=free&amp;wr_id=1024&amp;page=1#bo_vc">
      <span class="cnt_cmt">3</span></a>
  </div></td>
  <td class="td_name sv_use"><span class="sv_member">홍길동</span></td><td class="td_datetime">3시간 전</td></tr>
<tr><td class="td_num2">1023</td>
  <td class="td_subject"><div class="bo_tit">
    <a href="./board.php?bo_table=free&amp;wr_id=1023&amp;page=1">어제 글</a></div></td>
  <td class="td_name sv_use"><span class="sv_member">김철수</span></td><td class="td_datetime">11-20</td></tr>
<tr><td class="td_num2">1022</td>
  <td class="td_subject"><div class="bo_tit"><a href="javascript:alert(document.cookie)">스크립트</a>
    <a href="data:text/html,<script>alert(1)</script>">데이터</a></div></td>
  <td class="td_name sv_use"><span class="sv_member">익명</span></td><td class="td_datetime">2026.11.21 14:03</td></tr>
</tbody></table>
<a href="./write.php?bo_table=free" class="btn_b01">글쓰기</a>
</form></div>
<nav class="pg_wrap"><span class="pg">
  <span class="sound_only">열린</span><strong class="pg_current">1</strong><span class="sound_only">페이지</span>
  <a href="./board.php?bo_table=free&amp;page=2" class="pg_page">2</a>
  <a href="./board.php?bo_table=free&amp;page=3" class="pg_page">3</a>
  <a href="./board.php?bo_table=free&amp;page=9" class="pg_page pg_end">맨끝</a>
</span></nav>
<footer id="ft"><a href="/content/privacy">개인정보처리방침</a></footer>
</body></html>"""

# A gnuboard post served at a short URL with <base href> pointing at /bbs/: relative URLs must use the base.
GNUBOARD_POST = """<!doctype html>
<html lang="ko"><head><meta charset="utf-8">
<base href="https://board.example.kr/bbs/">
<title>첫 번째 글 &gt; 자유게시판 | 예제 커뮤니티</title>
<meta property="og:title" content="첫 번째 글 &gt; 자유게시판 | 예제 커뮤니티">
<meta property="og:type" content="article">
<meta property="og:image" content="https://board.example.kr/data/file/free/og_thumb.jpg">
<style>#bo_v { color: red }</style>
</head>
<body>
<header id="hd"><img src="/theme/basic/img/logo.png" alt="로고">
  <section class="ol"><strong class="sv_member">로그인한회원</strong> <time>14:59</time></section></header>
<article id="bo_v">
  <header><h2 id="bo_v_title"><span class="bo_v_cate">잡담</span> <span class="bo_v_tit">첫 번째 글</span></h2></header>
  <section id="bo_v_info"><h2>페이지 정보</h2>
    <span class="sound_only">작성자</span> <strong><span class="sv_member">홍길동</span></strong>
    <span class="sound_only">댓글</span><strong><a href="#bo_vc"> 2건</a></strong>
    <span class="sound_only">조회</span><strong>12회</strong>
    <strong class="if_date"><span class="sound_only">작성일</span><i class="fa fa-clock-o"></i>
      2026.11.21 14:03</strong>
  </section>
  <section id="bo_v_file"><h2>첨부파일</h2><ul>
    <li><a href="./download.php?bo_table=free&amp;wr_id=1024&amp;no=0" class="view_file_download">
      <img src="/skin/board/basic/img/icon_file.gif" alt=""> <strong>clip_full.mp4</strong></a> (12.3M)</li>
    <li><a href="/data/file/free/archive.7z">archive.7z</a></li>
  </ul></section>
  <section id="bo_v_atc"><h2 id="bo_v_atc_title">본문</h2>
    <div id="bo_v_img"><a href="/data/file/free/photo_big.jpg" target="_blank" class="view_image">
      <img src="/data/file/free/thumb-photo_835x600.jpg" width="835" height="600" alt=""></a></div>
    <div id="bo_v_con">
      <p>본문 첫 줄입니다.\u202e</p>
      <p>둘째   줄\t<img src="/img/loading.gif" data-src="../data/editor/2611/lazy.jpg" alt=""></p>
      <script>document.write("광고")</script>
      <img srcset="/data/editor/a-480.jpg 480w, /data/editor/a-1080.jpg 1080w, /data/editor/a-800.jpg 800w"
           src="/data/editor/a-480.jpg" alt="">
      <picture><source srcset="/data/editor/b.webp 1x, /data/editor/b@2x.webp 2x" type="image/webp">
        <img src="/data/editor/b.jpg" alt=""></picture>
      <video controls poster="/data/editor/poster.jpg">
        <source src="/data/editor/movie.webm" type="video/webm"><source src="movie.mp4" type="video/mp4"></video>
      <p><a href="https://cdn.example.net/v/clip.mp4?token=1#t=10">원본 영상</a></p>
      <img src="/plugin/editor/cheditor5/icons/em/1.gif" alt="">
      <img src="https://track.example.com/p.gif?id=1" width="1" height="1" alt="">
      <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="">
      <a href="javascript:void(0)" onclick="alert(1)">공유</a>
    </div>
  </section>
  <ul class="bo_v_nb"><li class="btn_prv"><span class="nb_tit">이전글</span>
    <a href="./board.php?bo_table=free&amp;wr_id=1023">어제 글</a></li></ul>
  <section id="bo_vc"><h2>댓글목록</h2>
    <article id="c_2001"><header><h2>댓글러님의 댓글</h2><span class="sv_member">댓글러</span>
      <span class="bo_vc_hdinfo"><time datetime="2026-11-21T14:30:00+09:00">26-11-21 14:30</time></span></header>
      <div class="cmt_contents"><p>잘 봤습니다</p></div></article>
  </section>
</article>
<footer id="ft"><img src="/data/banner/footer.jpg" alt="배너"></footer>
</body></html>"""

XE_POST = """<html><head><meta charset="utf-8"><title>웃긴 글 - 유머 게시판</title></head><body>
<div id="header"><a href="/">홈</a></div>
<div class="rd rd_nav_style2 clear">
  <div class="rd_hd clear"><div class="board clear">
    <div class="top_area ngeb"><div class="fr"><span class="date m_no">3시간 전</span></div>
      <h1 class="np_18px"><a href="https://xe.example.kr/humor/5501">웃긴 글</a></h1></div>
    <div class="btm_area clear"><div class="side">
      <a href="#popup_menu_area" class="nick member_4" onclick="return false">김철수</a></div></div>
  </div></div>
  <div class="rd_body clear"><article><div class="document_5501_4 xe_content">
    <p>내용입니다</p><img src="./files/attach/images/1/501/5501/x.jpg" alt="">
  </div></article></div>
</div></body></html>"""


def phpbb_post(number: int, author: str, when: str, body: str) -> str:
    return f"""
<div id="p{number}" class="post has-profile bg{number % 2 + 1}"><div class="inner">
  <dl class="postprofile" id="profile{number}"><dt class="has-profile-rank has-avatar">
    <div class="avatar-container"><a href="./memberlist.php?mode=viewprofile&amp;u=2" class="avatar">
      <img class="avatar" src="./download/file.php?avatar=2_1.png" width="90" height="90" alt="User avatar"></a></div>
    <a href="./memberlist.php?mode=viewprofile&amp;u=2" class="username-coloured">{author}</a></dt>
    <dd class="profile-posts"><strong>Posts:</strong> 12</dd></dl>
  <div class="postbody"><div id="post_content{number}">
    <h3><a href="#p{number}">Re: Leaked pictures thread</a></h3>
    <p class="author"><span class="responsive-hide">by <strong><a href="./memberlist.php?mode=viewprofile&amp;u=2"
      class="username-coloured">{author}</a></strong> &raquo; </span>{when}</p>
    <div class="content">{body}</div>
    <div id="sig{number}" class="signature"><img src="./images/sig_banner_{number}.png" alt=""></div>
  </div></div>
</div></div>
<hr class="divider">"""


PHPBB_THREAD = f"""<!DOCTYPE html><html dir="ltr" lang="en-gb"><head><meta charset="utf-8">
<title>Leaked pictures thread - Example Forum</title>
<link rel="canonical" href="https://forum.example.com/viewtopic.php?t=77"></head>
<body id="phpbb"><div id="wrap" class="wrap">
<div class="headerbar" role="banner">
  <a href="./index.php"><img src="./styles/prosilver/theme/images/site_logo.gif"></a></div>
<div id="page-body" class="page-body" role="main">
<h2 class="topic-title"><a href="./viewtopic.php?t=77">Leaked pictures thread</a></h2>
<div class="action-bar bar-top"><div class="pagination">3 posts &bull; Page <strong>1</strong> of <strong>2</strong>
  <ul><li class="active"><span>1</span></li>
  <li><a class="button" href="./viewtopic.php?t=77&amp;start=25" role="button">2</a></li>
  <li class="arrow next"><a class="button button-icon-only" href="./viewtopic.php?t=77&amp;start=25" rel="next"
    role="button"><i class="icon fa-chevron-right fa-fw" aria-hidden="true"></i><span class="sr-only">Next</span></a>
  </li></ul></div></div>
{phpbb_post(101, "alice", '<time datetime="2026-11-20T10:00:00+00:00">Fri Nov 20, 2026 10:00 am</time>',
            'First post <img class="smilies" src="./images/smilies/icon_e_smile.gif" width="15" height="17" alt=":)">'
            '<br><img src="https://img.example.org/full/one.jpg" class="postimage" alt="Image">')}
{phpbb_post(102, "bob", '<time datetime="2026-11-20T11:30:00+00:00">Fri Nov 20, 2026 11:30 am</time>',
            'Second post, with an attachment<dl class="attachbox"><dd><dl class="file">'
            '<dt class="attach-image"><img class="postimage" src="./download/file.php?id=9&amp;mode=view"'
            ' alt="beach.jpg"></dt></dl></dd></dl>')}
{phpbb_post(103, "carol", "Sat Nov 21, 2026 2:03 am",
            'Third post <a href="https://files.example.org/clip.webm" class="postlink">clip</a>'
            ' and <a href="./download/file.php?id=10">pack.zip</a>')}
</div>
<div id="page-footer" class="page-footer" role="contentinfo"><a href="./ucp.php?mode=register">Register</a></div>
</div></body></html>"""

DISCOURSE_THREAD = """<html><head><title>Is this a re-upload? - Support - Example Discourse</title>
<meta property="og:title" content="Is this a re-upload?"><meta property="og:site_name" content="Example Discourse">
</head><body><div id="main-outlet" class="wrap" role="main">
<div id="topic-title"><h1><a href="/t/is-this-a-re-upload/42">Is this a re-upload?</a></h1></div>
<div id="post_1" itemprop="mainEntity" itemscope itemtype="http://schema.org/DiscussionForumPosting"
     class="topic-body crawler-post">
  <div class="crawler-post-meta"><span class="creator" itemprop="author" itemscope itemtype="http://schema.org/Person">
    <a itemprop="url" href="https://talk.example.com/u/dana"><span itemprop="name">dana</span></a></span>
    <span class="crawler-post-infos"><time itemprop="datePublished" datetime="2026-11-19T08:15:00Z" class="post-time">
      November 19, 2026,  8:15am</time><span itemprop="position">1</span></span></div>
  <div class="post" itemprop="text"><p>Found this:</p>
    <p><img src="https://talk.example.com/uploads/default/original/1X/abc.jpeg" width="690" height="388" alt="x">
    <img src="https://talk.example.com/images/emoji/twitter/frowning.png?v=12" class="emoji" alt=":frowning:"></p>
  </div></div>
<div id="post_2" itemprop="comment" itemscope itemtype="http://schema.org/Comment" class="topic-body crawler-post">
  <div class="crawler-post-meta"><span class="creator" itemprop="author" itemscope itemtype="http://schema.org/Person">
    <a itemprop="url" href="https://talk.example.com/u/eve"><span itemprop="name">eve</span></a></span>
    <span class="crawler-post-infos"><time itemprop="datePublished" datetime="2026-11-19T09:00:00Z" class="post-time">
      November 19, 2026,  9:00am</time></span></div>
  <div class="post" itemprop="text"><p>Reported it.</p></div></div>
<div role="navigation" itemscope itemtype="http://schema.org/SiteNavigationElement" class="topic-body crawler-post">
  <span itemprop="name"><b>
    <a rel="next" itemprop="url" href="/t/is-this-a-re-upload/42?page=2">next page →</a></b></span>
</div>
</div></body></html>"""


# --- Korean boards ----------------------------------------------------------------------------------------------


def test_gnuboard_list_page() -> None:
    url = "https://board.example.kr/bbs/board.php?bo_table=free&page=1"
    page = extract_page(GNUBOARD_LIST.encode(), url, NOW)
    assert page.title == "자유게시판 1 페이지 | 예제 커뮤니티"
    assert page.posts == []
    assert page.post_links == [
        "https://board.example.kr/bbs/board.php?bo_table=free&wr_id=1024&page=1",
        "https://board.example.kr/bbs/board.php?bo_table=free&wr_id=1023&page=1",
    ]
    assert page.next_pages == [
        "https://board.example.kr/bbs/board.php?bo_table=free&page=2",
        "https://board.example.kr/bbs/board.php?bo_table=free&page=3",
        "https://board.example.kr/bbs/board.php?bo_table=free&page=9",
    ]
    assert "https://board.example.kr/bbs/board.php?bo_table=humor" in page.links
    assert "https://board.example.kr/bbs/write.php?bo_table=free" in page.links
    assert "https://board.example.kr/content/privacy" in page.links
    assert all(link.startswith("https://board.example.kr/") for link in page.links)  # no partner, mailto, js, data
    assert url not in page.links and len(page.links) == len(set(page.links))


def test_gnuboard_post_page() -> None:
    url = "https://board.example.kr/free/1024#bo_vc"
    page = extract_page(GNUBOARD_POST.encode(), url, NOW)
    assert page.url == "https://board.example.kr/free/1024"
    [post] = page.posts
    assert post.url == "https://board.example.kr/free/1024"
    assert post.title == "첫 번째 글"
    assert post.author == "홍길동"  # not the logged-in member in the header, not the commenter
    assert post.posted_text == "2026.11.21 14:03"
    assert post.posted_at == kst(2026, 11, 21, 14, 3)
    assert post.text.startswith("본문 첫 줄입니다.\n둘째 줄")
    assert "광고" not in post.text and "color" not in post.text and "\u202e" not in post.text
    assert post.images == [
        "https://board.example.kr/data/file/free/photo_big.jpg",  # the linked original, then its thumbnail
        "https://board.example.kr/data/file/free/thumb-photo_835x600.jpg",
        "https://board.example.kr/data/editor/2611/lazy.jpg",  # data-src resolved against <base href>, not /free/
        "https://board.example.kr/data/editor/a-1080.jpg",  # the widest srcset candidate
        "https://board.example.kr/data/editor/b@2x.webp",  # <picture><source srcset>
        "https://board.example.kr/data/editor/b.jpg",
        "https://board.example.kr/data/editor/poster.jpg",
        "https://board.example.kr/data/file/free/og_thumb.jpg",
    ]
    assert post.videos == [
        "https://board.example.kr/bbs/download.php?bo_table=free&wr_id=1024&no=0",  # named clip_full.mp4
        "https://board.example.kr/data/editor/movie.webm",
        "https://board.example.kr/bbs/movie.mp4",
        "https://cdn.example.net/v/clip.mp4?token=1",
    ]
    assert post.files == ["https://board.example.kr/data/file/free/archive.7z"]
    # The previous-post link is a post to crawl; the in-page comment anchor isn't a link of its own.
    assert page.post_links == ["https://board.example.kr/bbs/board.php?bo_table=free&wr_id=1023"]
    assert page.next_pages == []


def test_xe_post_with_relative_time() -> None:
    page = extract_page(XE_POST, "https://xe.example.kr/index.php?mid=humor&document_srl=5501", NOW)
    [post] = page.posts
    assert (post.title, post.author, post.posted_text) == ("웃긴 글", "김철수", "3시간 전")
    assert post.posted_at == NOW - timedelta(hours=3)
    assert post.text == "내용입니다"
    assert post.images == ["https://xe.example.kr/files/attach/images/1/501/5501/x.jpg"]
    assert "https://xe.example.kr/humor/5501" in page.post_links  # Rhymix short URL


def test_euc_kr_bytes_are_decoded() -> None:
    html = XE_POST.replace('charset="utf-8"', 'charset="euc-kr"').encode("cp949")
    page = extract_page(html, "https://xe.example.kr/index.php?mid=humor&document_srl=5501", NOW)
    assert page.title == "웃긴 글 - 유머 게시판"
    assert page.posts[0].author == "김철수"


# --- English forums ---------------------------------------------------------------------------------------------


def test_phpbb_thread_gives_one_post_each() -> None:
    page = extract_page(PHPBB_THREAD.encode(), "https://forum.example.com/viewtopic.php?t=77", NOW, tz=UTC)
    assert [p.url for p in page.posts] == [
        "https://forum.example.com/viewtopic.php?t=77#p101",
        "https://forum.example.com/viewtopic.php?t=77#p102",
        "https://forum.example.com/viewtopic.php?t=77#p103",
    ]
    assert [p.author for p in page.posts] == ["alice", "bob", "carol"]
    assert [p.title for p in page.posts] == ["Leaked pictures thread"] * 3
    assert [p.posted_at for p in page.posts] == [
        datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 20, 11, 30, tzinfo=UTC),
        datetime(2026, 11, 21, 2, 3, tzinfo=UTC),  # text only, read in the forum's zone
    ]
    assert page.posts[0].posted_text == "2026-11-20T10:00:00+00:00"
    first, second, third = page.posts
    assert first.text == "First post"
    assert first.images == ["https://img.example.org/full/one.jpg"]  # no smiley, avatar or signature banner
    assert second.images == ["https://forum.example.com/download/file.php?id=9&mode=view"]
    assert third.videos == ["https://files.example.org/clip.webm"]
    assert third.files == ["https://forum.example.com/download/file.php?id=10"]
    assert third.images == []
    assert page.next_pages == ["https://forum.example.com/viewtopic.php?t=77&start=25"]


def test_discourse_crawler_view() -> None:
    page = extract_page(DISCOURSE_THREAD, "https://talk.example.com/t/is-this-a-re-upload/42", NOW)
    assert [(p.url, p.author, p.posted_at) for p in page.posts] == [
        ("https://talk.example.com/t/is-this-a-re-upload/42#post_1", "dana", datetime(2026, 11, 19, 8, 15, tzinfo=UTC)),
        ("https://talk.example.com/t/is-this-a-re-upload/42#post_2", "eve", datetime(2026, 11, 19, 9, 0, tzinfo=UTC)),
    ]
    assert page.posts[0].title == "Is this a re-upload?"
    assert page.posts[0].text == "Found this:"
    assert page.posts[0].images == ["https://talk.example.com/uploads/default/original/1X/abc.jpeg"]
    assert page.next_pages == ["https://talk.example.com/t/is-this-a-re-upload/42?page=2"]


def test_comments_outside_the_post_are_posts_after_it() -> None:
    comment = '<article id="c_{0}"><span class="sv_member">댓글러{0}</span><span class="date">26-11-21 14:1{0}</span>'
    comment += '<div class="cmt"><p>댓글 {0} <img src="/data/c{0}.jpg"></p></div></article>'
    html = f"""<html><body><div id="bo_v"><h2 id="bo_v_title">본문 글</h2><span class="sv_member">글쓴이</span>
      <span class="if_date">26-11-21 14:03</span><div id="bo_v_con"><p>본문</p><img src="/data/main.jpg"></div></div>
      <section id="bo_vc">{comment.format(1)}{comment.format(2)}</section></body></html>"""
    page = extract_page(html, "https://board.example.kr/free/1", NOW)
    assert [(p.url, p.author, p.images) for p in page.posts] == [
        ("https://board.example.kr/free/1", "글쓴이", ["https://board.example.kr/data/main.jpg"]),
        ("https://board.example.kr/free/1#c_1", "댓글러1", ["https://board.example.kr/data/c1.jpg"]),
        ("https://board.example.kr/free/1#c_2", "댓글러2", ["https://board.example.kr/data/c2.jpg"]),
    ]
    assert page.posts[0].posted_at == kst(2026, 11, 21, 14, 3)
    assert page.posts[0].title == page.posts[2].title == "본문 글"


def test_next_page_forms() -> None:
    html = """<html><head><link rel="next" href="/list?page=3&amp;sort=new"></head><body>
      <div><a href="/list?page=5">다음</a> <a href="/list?page=6">›</a> <a href="/list?page=7" aria-label="Next page">
      <i class="fa fa-chevron-right"></i></a> <a href="/list?page=8">Next</a> <a href="/list?page=9">다음글</a></div>
      <div class="paging"><a href="/list?page=1">1</a><a href="/list/page/3">3</a><a href="/list?page=4">4</a></div>
      </body></html>"""
    page = extract_page(html, "https://site.example.com/list?page=2&sort=new", NOW)
    assert page.next_pages == [f"https://site.example.com/list{tail}" for tail in (
        "?page=3&sort=new", "?page=5", "?page=6", "?page=7", "?page=8", "/page/3", "?page=4")]  # fmt: skip


# --- chrome, hostile and odd pages ------------------------------------------------------------------------------


def test_ui_images_are_skipped() -> None:
    html = """<html><head><meta property="og:type" content="article"></head><body>
    <div class="post-content"><p>사진 올립니다 한 장만 보세요 여러분</p>
      <img src="/img/emoticon/smile.gif"><img src="/images/emoji/heart.png"><img src="/icons/new.gif">
      <img src="/skin/board/basic/img/btn_reply.png"><img src="/theme/x/img/bullet.png"><img src="/img/ui_sprite.png">
      <img src="/img/x.gif" width="16" height="16"><img src="/img/y.gif" style="width: 1px; height: 1px">
      <img src="https://stats.example.com/t.gif" width="1" height="1"><img class="emoticon" src="/img/e1.png">
      <span style="background-image: url('/data/bg/real-bg.jpg')">배경</span>
      <img src="/data/editor/real.jpg" width="640" height="480">
    </div></body></html>"""
    [post] = extract_page(html, "https://site.example.kr/board/free/77", NOW).posts
    assert post.images == ["https://site.example.kr/data/bg/real-bg.jpg", "https://site.example.kr/data/editor/real.jpg"]


def test_hostile_links_are_dropped() -> None:
    html = """<html><body><article class="post-content"><p>링크 모음</p>
      <a href="javascript:alert(1)">a</a><a href=" JavaScript:alert(1)">b</a><a href="java&#10;script:alert(1)">c</a>
      <a href="data:video/mp4;base64,AAAA">d</a><a href="mailto:x@example.com">e</a><a href="ftp://x/y.mp4">f</a>
      <a href="vbscript:x">g</a><a href="http://[::1">h</a><a href="">i</a><a href="#top">j</a>
      <img src="javascript:alert(1)"><img srcset="data:image/png;base64,AAAA 2x">
      <video src="blob:https://x/1"></video>
      <a href="//cdn.example.kr/v/ok.mp4">k</a>
    </article></body></html>"""
    page = extract_page(html, "https://site.example.kr/board/free/78", NOW)
    [post] = page.posts
    assert post.videos == ["https://cdn.example.kr/v/ok.mp4"]
    assert post.images == [] and post.files == []
    assert page.links == []  # the page's own URL ("#top") is not a link


@pytest.mark.parametrize(
    "html",
    [
        b"",
        b"   \n ",
        b"\x00\x01\x02",
        os.urandom(4096),
        b"<html><body><div><p>unclosed <b>tags <img src='/data/a.jpg' <a href='/board/x/123'>",
        b"<?xml version='1.0' encoding='latin1'?><html><p>x</p></html>",
        "<p>잘린 글 \ud800 surrogate</p>",
        b"<" * 100_000,
        b"<div>" * 50_000 + b"deep" + b"</div>" * 50_000,
    ],
    ids=["empty", "blank", "controls", "random", "unclosed", "xml-decl", "surrogate", "angles", "deep"],
)
def test_garbage_never_raises(html: bytes | str) -> None:
    page = extract_page(html, "https://site.example.kr/board/free/1", NOW)
    assert isinstance(page, Page) and page.url == "https://site.example.kr/board/free/1"


def test_truncated_post_page() -> None:
    data = GNUBOARD_POST.encode()
    cut = data.index("둘째".encode()) + 2  # mid-way through a UTF-8 character inside the content
    page = extract_page(data[:cut], "https://board.example.kr/free/1024", NOW)
    [post] = page.posts
    assert (post.title, post.author, post.posted_at) == ("첫 번째 글", "홍길동", kst(2026, 11, 21, 14, 3))
    assert post.text.startswith("본문 첫 줄입니다.")
    assert post.images[0] == "https://board.example.kr/data/file/free/photo_big.jpg"


def test_garbage_gives_empty_page() -> None:
    page = extract_page(b"\xff\xfe\x00garbage\x00\x00", "https://site.example.kr/", NOW)
    assert page.posts == [] and page.links == [] and page.post_links == [] and page.next_pages == []


def test_ten_megabyte_page_is_capped() -> None:
    row = '<tr><td><a href="/bbs/board.php?bo_table=free&amp;wr_id={0}">글 {0}</a></td></tr>\n'
    rows = "".join(row.format(i) for i in range(120_000))
    tail = '<a href="/bbs/board.php?bo_table=free&amp;wr_id=999999999">past the cap</a>'
    html = f"<html><body><table>{rows}</table>{tail}</body></html>".encode()
    assert len(html) > 10_000_000
    started = time.monotonic()
    page = extract_page(html, "https://board.example.kr/bbs/board.php?bo_table=free", NOW)
    assert time.monotonic() - started < 20
    assert len(page.post_links) == MAX_LINKS and len(page.links) == MAX_LINKS
    assert all("999999999" not in link for link in page.links)


def test_media_per_post_is_capped() -> None:
    images = "".join(f'<img src="/data/editor/{i}.jpg">' for i in range(500))
    html = f'<html><body><div id="bo_v_con"><p>많은 사진</p>{images}</div></body></html>'
    [post] = extract_page(html, "https://board.example.kr/free/1", NOW).posts
    assert len(post.images) == MAX_MEDIA and post.images[0] == "https://board.example.kr/data/editor/0.jpg"


def test_srcset_with_commas_in_urls() -> None:
    html = """<html><body><div class="entry-content"><p>cdn images with commas in their URLs</p>
      <img srcset="https://cdn.example.com/w_200,h_100/a.jpg 200w, https://cdn.example.com/w_900,h_450/a.jpg 900w">
      <img srcset="/x/1.jpg, /x/3.jpg 3x, /x/2.jpg 2x">
    </div></body></html>"""
    [post] = extract_page(html, "https://blog.example.com/post/12", NOW).posts
    assert post.images == ["https://cdn.example.com/w_900,h_450/a.jpg", "https://blog.example.com/x/3.jpg"]


def test_unknown_markup_falls_back_to_largest_block() -> None:
    html = """<html><head><title>새 소식 :: 모두의 게시판</title></head><body>
      <div id="menu"><a href="/a">메뉴 하나</a> <a href="/b">메뉴 둘</a> <a href="/c">메뉴 셋</a></div>
      <div class="wrap"><div class="x1">작성 2026-11-20 22:10:00</div>
        <div class="x2"><p>이 글은 알려진 마크업이 없는 게시판의 본문입니다. 충분히 긴 문장.</p>
          <img src="/upload/2026/11/p1.png"></div></div>
      <div id="footer">회사 소개</div></body></html>"""
    [post] = extract_page(html, "https://odd.example.kr/bbs/view.php?no=31337", NOW).posts
    assert post.title == "새 소식"
    assert post.posted_at == kst(2026, 11, 20, 22, 10)
    assert post.text.startswith("이 글은 알려진 마크업이 없는")
    assert post.images == ["https://odd.example.kr/upload/2026/11/p1.png"]


# --- site selectors ---------------------------------------------------------------------------------------------

ODD_THREAD = """<html><body><div id="thread">
  <div class="reply" data-no="1"><b class="who">mina</b><em class="when">2026.11.20 13:00</em>
    <div class="txt">one <img src="/u/1.jpg"></div></div>
  <div class="reply" data-no="2"><b class="who">joon</b><em class="when">어제 23:10</em>
    <div class="txt">two <a href="/u/2.mp4">영상</a></div></div>
</div>
<div class="nav"><span class="go"><a href="?p=2">더보기</a></span></div>
<div class="lst"><span class="go"><a href="/read/9">글</a></span></div></body></html>"""


def test_site_selectors_css() -> None:
    selectors = SiteSelectors(
        post="#thread > div.reply", author="b.who", time=".when", content="div.txt",
        next_page=".nav .go a", post_link="div.lst a[href^='/read/']",
    )  # fmt: skip
    page = extract_page(ODD_THREAD, "https://odd.example.kr/thread?id=5", NOW, selectors)
    assert [(p.url, p.author, p.posted_at, p.text) for p in page.posts] == [
        ("https://odd.example.kr/thread?id=5#post-1", "mina", kst(2026, 11, 20, 13, 0), "one"),
        ("https://odd.example.kr/thread?id=5#post-2", "joon", kst(2026, 11, 20, 23, 10), "two 영상"),
    ]
    assert page.posts[0].images == ["https://odd.example.kr/u/1.jpg"]
    assert page.posts[1].videos == ["https://odd.example.kr/u/2.mp4"]
    assert page.next_pages == ["https://odd.example.kr/thread?p=2"]
    assert page.post_links == ["https://odd.example.kr/read/9"]


def test_site_selectors_xpath() -> None:
    selectors = SiteSelectors(post="//div[@class='reply']", author="./b/text()", time=".//em/text()")
    page = extract_page(ODD_THREAD, "https://odd.example.kr/thread?id=5", NOW, selectors)
    assert [(p.author, p.posted_text) for p in page.posts] == [("mina", "2026.11.20 13:00"), ("joon", "어제 23:10")]


@pytest.mark.parametrize("selector", ["div:first-child", "a >", "", "//div[", "div >> p", "[href"])
def test_bad_selector_fails_at_config_time(selector: str) -> None:
    with pytest.raises(ValueError):
        SiteSelectors(title=selector)


# --- post times -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("방금", NOW),
        ("방금 전", NOW),
        ("30초 전", NOW - timedelta(seconds=30)),
        ("5분 전", NOW - timedelta(minutes=5)),
        ("3시간 전", NOW - timedelta(hours=3)),
        ("3시간전", NOW - timedelta(hours=3)),
        ("2일 전", NOW - timedelta(days=2)),
        ("1주 전", NOW - timedelta(weeks=1)),
        ("2개월 전", datetime(2026, 9, 21, 6, 0, tzinfo=UTC)),
        ("3달 전", datetime(2026, 8, 21, 6, 0, tzinfo=UTC)),
        ("1년 전", datetime(2025, 11, 21, 6, 0, tzinfo=UTC)),
        ("어제", NOW - timedelta(days=1)),
        ("어제 14:03", kst(2026, 11, 20, 14, 3)),
        ("그제", NOW - timedelta(days=2)),
        ("오늘 09:10", kst(2026, 11, 21, 9, 10)),
        ("2026.11.21", kst(2026, 11, 21)),
        ("2026.11.21 14:03", kst(2026, 11, 21, 14, 3)),
        ("2026-11-21 14:03:05", kst(2026, 11, 21, 14, 3, 5)),
        ("26.11.21", kst(2026, 11, 21)),
        ("26-11-21 14:03", kst(2026, 11, 21, 14, 3)),
        ("2026/11/21", kst(2026, 11, 21)),
        ("2026. 11. 21. 오후 2:03:05", kst(2026, 11, 21, 14, 3, 5)),
        ("작성일 2026-11-21 (토) 14:03", kst(2026, 11, 21, 14, 3)),
        ("11.21", kst(2026, 11, 21)),
        ("11-20", kst(2026, 11, 20)),
        ("12.25", kst(2025, 12, 25)),  # not yet this year: last year's
        ("14:03", kst(2026, 11, 21, 14, 3)),
        ("15:05", kst(2026, 11, 21, 15, 5)),  # a few minutes ahead: our clock is behind the board's
        ("16:30", kst(2026, 11, 20, 16, 30)),  # later than now: yesterday's
        ("2026년 11월 21일 오후 2시 3분", kst(2026, 11, 21, 14, 3)),
        ("11월 20일", kst(2026, 11, 20)),
        ("오후 2:03", kst(2026, 11, 21, 14, 3)),
        ("오전 12:30", kst(2026, 11, 21, 0, 30)),
        ("２０２６．１１．２１", kst(2026, 11, 21)),
        ("3 hours ago", NOW - timedelta(hours=3)),
        ("an hour ago", NOW - timedelta(hours=1)),
        ("2 days ago", NOW - timedelta(days=2)),
        ("5 mins ago", NOW - timedelta(minutes=5)),
        ("just now", NOW),
        ("yesterday", NOW - timedelta(days=1)),
        ("Yesterday at 2:03 PM", kst(2026, 11, 20, 14, 3)),
        ("2026-11-21T05:03:00Z", datetime(2026, 11, 21, 5, 3, tzinfo=UTC)),
        ("2026-11-21T14:03:00+09:00", datetime(2026, 11, 21, 5, 3, tzinfo=UTC)),
        ("2026-11-20T21:03:00.123-0800", datetime(2026, 11, 21, 5, 3, 0, 123000, tzinfo=UTC)),
        ("Nov 21, 2026", kst(2026, 11, 21)),
        ("Sat Nov 21, 2026 2:03 pm", kst(2026, 11, 21, 14, 3)),
        ("21 November 2026 14:03", kst(2026, 11, 21, 14, 3)),
        ("21/11/2026", kst(2026, 11, 21)),
        ("1795000000", datetime.fromtimestamp(1795000000, UTC)),
    ],
)
def test_parse_post_time(text: str, expected: datetime) -> None:
    parsed = parse_post_time(text, NOW)
    assert parsed == expected
    assert parsed is not None and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "", "조회 1234", "garbage", "2027.01.01", "2026.11.23 10:00", "2026.13.40", "25:99", "05/11/2026",
        "1990.01.01", "오후 13:00", "3000 years ago", "9999-12-31T23:59:59Z", "0101234567",
    ],
)  # fmt: skip
def test_parse_post_time_refuses(text: str) -> None:
    assert parse_post_time(text, NOW) is None


def test_parse_post_time_zones() -> None:
    assert parse_post_time("2026-11-21 14:03", NOW, tz=UTC) == datetime(2026, 11, 21, 14, 3, tzinfo=UTC)
    assert parse_post_time("14:03", NOW, tz=timezone(timedelta(hours=-5))) == datetime(2026, 11, 20, 19, 3, tzinfo=UTC)
    naive_now = NOW.replace(tzinfo=None)  # taken as UTC
    assert parse_post_time("3시간 전", naive_now) == NOW - timedelta(hours=3)
