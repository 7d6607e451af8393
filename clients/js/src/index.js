export { ChatClient, isFatalClose } from './chat.js';
export { ChatHttp, ChatError } from './http.js';
