-- jiwoom schema v6: model versions (issue 15). Every stored vector row records the model and preprocessing that
-- made it (server.models.versions). Reference media are never stored, so a reference made by one model can only
-- ever be compared with vectors of the same model: the service checks these ids at start.

alter table reference_vectors add column model text not null default '';
alter table sighting_vectors add column model text not null default '';
alter table benign_vectors add column model text not null default '';

-- Rows stored before this migration were made by the only models there were then.
update reference_vectors set model = case signal
    when 'pdq' then 'pdq:1'
    when 'embedding' then 'sscd:86386042eb85@288/grid3/regions1'
    when 'face' then 'dlib_face_recognition_resnet_model_v1:5pt'
    else model end;
update sighting_vectors set model = case signal
    when 'pdq' then 'pdq:1'
    when 'embedding' then 'sscd:86386042eb85@288/grid3/regions1'
    when 'face' then 'dlib_face_recognition_resnet_model_v1:5pt'
    else model end;
update benign_vectors set model = case signal
    when 'pdq' then 'pdq:1'
    when 'embedding' then 'sscd:86386042eb85@288/grid3/regions1'
    when 'face' then 'dlib_face_recognition_resnet_model_v1:5pt'
    else model end;

alter table reference_vectors alter column model drop default;
alter table sighting_vectors alter column model drop default;
alter table benign_vectors alter column model drop default;
