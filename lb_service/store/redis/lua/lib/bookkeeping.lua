-- The counts and busy time booked atomically with a lease opening or closing.

-- Bookkeeping, kept atomically with the lease it books. These lines mirror
-- feedback.open_lease and feedback.close_lease (with capacity.accrue) operation for
-- operation; tests/store/test_redis_store.py holds them equal. Nothing else about an
-- agent's figures is computed in Lua.
local function accrue(s, now)
  if s.active > 0 and now > s.activity_at then
    s.busy = s.busy + (now - s.activity_at) * math.min(s.active, s.slots) / s.slots
  end
  s.activity_at = now
end

local function book_open(s, now)
  accrue(s, now)
  s.active = s.active + 1
  s.total = s.total + 1
  s.last = now
end

local function book_close(s, now)
  accrue(s, now)
  s.active = s.active - 1
end
