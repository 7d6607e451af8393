export { ChatClient, isFatalClose, backoffDelay } from './chat.js';
export { ChatHttp, ChatError } from './http.js';
