-- jiwoom schema v5: precision at scale (issue 21). ORB keypoints of stored media for geometric verification of
-- candidate matches, and each match's calibrated confidence.

-- Keypoints (x, y, size, response as float32) and ORB descriptors (32 bytes each) of a few frames per item, in
-- units of the frame scaled to 640 px on its long side (width, height give that frame's size in those units).
-- Features, never pixels; they go with their reference or sighting.
create table reference_local_features (
    reference_id  bigint not null references reference_media (id) on delete cascade,
    frame         integer not null,
    timestamp_s   real not null,
    width         real not null,
    height        real not null,
    keypoints     bytea not null,
    descriptors   bytea not null,
    primary key (reference_id, frame)
);

create table sighting_local_features (
    sighting_id   bigint not null references sightings (id) on delete cascade,
    frame         integer not null,
    timestamp_s   real not null,
    width         real not null,
    height        real not null,
    keypoints     bytea not null,
    descriptors   bytea not null,
    primary key (sighting_id, frame)
);

-- p_false: calibrated probability that the match is false (null: matched before calibration, or without one).
-- expected_false: false matches a score like this brings per query at the library's size. verification:
-- 'verified', 'rejected', 'unverifiable', or '' where it was not needed. face_only: the reference matched on
-- faces alone (weaker evidence: a face is not the picture).
alter table matches
    add column p_false         real,
    add column expected_false  double precision,
    add column verification    text not null default '',
    add column face_only       boolean not null default false;
create index matches_p_false on matches (p_false);
