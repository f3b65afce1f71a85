-- jiwoom schema v7: the audio signal (issue 16). A match on a target's sound alone is weaker evidence than one on
-- its picture or a face, and is stored so; its vectors are Chromaprint codes (uint32 rows of dim 1) in the same
-- vector tables as every other signal.

alter table matches add column audio_only boolean not null default false;
